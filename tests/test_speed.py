"""The serving speed levers (inference.captioner.Speed): read from the bundle's serving.json,
validated, and applied where the captioner computes: int8 decoder weights, a bf16 encoder."""

import json

import pytest
import torch

from imagelingo.errors import ImageLingoError
from imagelingo.inference.captioner import Captioner, Speed, native_bf16
from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig
from imagelingo.inference.preprocess import EncoderSpec
from imagelingo.inference.quantized import RowInt8Decoder, RowInt8Linear
from imagelingo.inference.vocab import SPECIAL_TOKENS, Vocab
from imagelingo.serving.package import ServingConfig

SPEC = EncoderSpec("tiny", 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 16)


def tiny_captioner(speed: Speed) -> Captioner:
    torch.manual_seed(0)
    vocab = Vocab((*SPECIAL_TOKENS, "a", "dog", "runs", "on", "grass"))
    config = DecoderConfig(len(vocab), 16, 8, 16, 8, 16, 0.0)
    encoder = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=4), torch.nn.ReLU(), torch.nn.Flatten(2)
    )

    class Regions(torch.nn.Module):  # [B, C, H, W] -> [B, R, C], as the real trunk answers
        def forward(self, x):
            return encoder(x).transpose(1, 2)

    return Captioner(CaptionDecoder(config), vocab, SPEC, Regions(), speed)


def test_serving_json_is_read_and_checked(tmp_path):
    assert Speed.read(tmp_path) == Speed()  # no file: as trained
    (tmp_path / "serving.json").write_text(json.dumps({"decoder_precision": "int8"}))
    assert Speed.read(tmp_path).decoder_precision == "int8"
    (tmp_path / "serving.json").write_text(json.dumps({"decoder_precison": "int8"}))
    with pytest.raises(
        ImageLingoError, match=r"serving.json: unknown settings \['decoder_precison'\]"
    ):
        Speed.read(tmp_path)
    with pytest.raises(
        ImageLingoError, match="encoder_precision 'fp16': expected one of fp32, bf16"
    ):
        Speed(encoder_precision="fp16")


def test_params_package_section_is_what_the_bundle_gets():
    speed = ServingConfig().speed
    assert (speed.encoder_precision, speed.decoder_precision) == ("bf16", "int8")


def test_int8_decoder_is_quantized_and_still_captions():
    fp32, int8 = tiny_captioner(Speed()), tiny_captioner(Speed(decoder_precision="int8"))
    assert isinstance(fp32.decoder.lstm, torch.nn.LSTMCell)
    assert isinstance(int8.decoder, RowInt8Decoder)
    assert isinstance(int8.decoder.read_hidden, RowInt8Linear)
    features = torch.randn(3, 4, 16)
    assert len(int8.caption_features(features, beam_width=2, max_len=5)) == 3


def test_bf16_encoder_gives_fp32_features_close_to_fp32():
    pixels = torch.randn(2, 3, 32, 32)
    reference = tiny_captioner(Speed()).encode(pixels)
    bf16 = tiny_captioner(Speed(encoder_precision="bf16"))
    assert bf16.encoder_bf16 == native_bf16()  # emulated bf16 would be slower: fp32 there
    features = bf16.encode(pixels)
    assert features.dtype == torch.float32 and features.shape == reference.shape
    error = ((features - reference).norm() / reference.norm()).item()
    assert error < 2e-2 if native_bf16() else error == 0.0
