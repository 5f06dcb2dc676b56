"""A caption does not depend on the requests it is batched with (issue 30).

Served requests are batched: the encoder runs over all their images and one beam search over all
their beams. Whatever else is in the batch, each image must get the caption, the tokens and the
score it gets alone (scores within 1e-5 relative: what a client could ever compare). The int8
decoder quantizes each activation row by its own range (inference/quantized.py) and the encoder
takes one image per pass (Captioner.encode), so here both hold bit for bit.
"""

import random

import pytest
import torch
from PIL import Image

from imagelingo.data.dataset import load_records
from imagelingo.inference.captioner import Captioner, Speed
from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig
from imagelingo.inference.options import Options
from imagelingo.inference.preprocess import EncoderSpec
from imagelingo.inference.quantized import RowInt8Decoder, RowInt8Linear
from imagelingo.inference.vocab import SPECIAL_TOKENS, Vocab
from imagelingo.serving.images import decode_image
from imagelingo.serving.package import export_bundle

RELATIVE_SCORE_TOLERANCE = 1e-5


def assert_same_answers(alone, batched, context=""):
    assert [c.words for c in batched] == [c.words for c in alone], context
    for a, b in zip(alone, batched, strict=True):
        assert abs(a.score - b.score) <= RELATIVE_SCORE_TOLERANCE * abs(a.score), (
            context,
            a.score,
            b.score,
        )


def decoder_sized_like_flickr8k(seed: int = 0) -> tuple[CaptionDecoder, Vocab]:
    """An untrained decoder of the served model's shapes (params.yaml's train section, the
    Flickr8k vocabulary's size, EfficientNet-Lite0's 1280 channels): quantization ranges do not
    need training to show."""
    torch.manual_seed(seed)
    vocab = Vocab((*SPECIAL_TOKENS, *(f"w{i}" for i in range(2534))))
    config = DecoderConfig(len(vocab), 1280, 256, 512, 256, 512, 0.0)
    return CaptionDecoder(config).eval(), vocab


def test_int8_caption_ignores_a_batch_neighbour_with_far_larger_features():
    """The neighbour's region features are 50x larger: torch's per-call activation scale (the
    int8 decoder before issue 30) then quantizes the first image 50x coarser."""
    decoder, vocab = decoder_sized_like_flickr8k()
    spec = EncoderSpec("none", 224, (0.5,) * 3, (0.5,) * 3, 1280)
    captioner = Captioner(decoder, vocab, spec, speed=Speed(decoder_precision="int8"))
    torch.manual_seed(1)
    image, loud_neighbour = torch.rand(1, 49, 1280), 50 * torch.rand(1, 49, 1280)
    alone = captioner.caption_features(image, beam_width=3, max_len=12)
    batched = captioner.caption_features(torch.cat([image, loud_neighbour]), 3, 12)[:1]
    assert_same_answers(alone, batched)
    assert batched[0].score == alone[0].score  # bit for bit, not only within the tolerance


def test_row_int8_linear_is_close_to_fp32_and_exact_per_row():
    torch.manual_seed(0)
    linear = torch.nn.Linear(512, 300)
    quantized = RowInt8Linear(linear.weight, linear.bias)
    rows = torch.randn(24, 512) * torch.logspace(-2, 2, 24).unsqueeze(1)  # ranges 1e-2 .. 1e2
    rows[3] = 7.0  # a constant row: no activation rounding at all, only the weights'
    with torch.inference_mode():
        reference, together = linear(rows), quantized(rows)
        alone = torch.cat([quantized(row.unsqueeze(0)) for row in rows])
    assert torch.equal(together, alone)
    error = (together - reference).norm(dim=1) / reference.norm(dim=1)
    assert error.max() < 0.02, error.max()
    assert torch.allclose(together[3], 7.0 * quantized.weight_row_sum + linear.bias, atol=1e-5)


def test_int8_decoder_steps_like_the_fp32_decoder():
    """Same word scores and attention as the model it was made from, to int8's precision."""
    decoder, vocab = decoder_sized_like_flickr8k()
    int8 = RowInt8Decoder(decoder)
    torch.manual_seed(2)
    features = torch.rand(4, 49, 1280)
    words = torch.full((4,), vocab.start_id)
    with torch.inference_mode():
        state, int8_state = decoder.init_state(features), int8.init_state(features)
        for step in range(3):
            scores, state, alpha = decoder.step(words, state)
            int8_scores, int8_state, int8_alpha = int8.step(words, int8_state)
            error = ((int8_scores - scores).norm(dim=1) / scores.norm(dim=1)).max()
            assert error < 0.03, (step, error)
            assert (int8_alpha - alpha).abs().max() < 0.01, step
            words = scores.argmax(dim=1)


@pytest.fixture(scope="module")
def served_captioner(trained_model, tmp_path_factory):
    """The trained model as a served bundle loads it: TorchScript encoder, int8 decoder."""
    bundle = tmp_path_factory.mktemp("bundle")
    export_bundle(trained_model, bundle, speed=Speed(decoder_precision="int8"))
    return Captioner.load(bundle)


@pytest.fixture(scope="module")
def scene_images(pipeline_dirs):
    dataset = pipeline_dirs["dataset"]
    records = load_records(dataset, "test")[:10]
    scenes = [decode_image((dataset / "images" / r.image).read_bytes()) for r in records]
    # far from the training scenes: white noise and a flat colour
    torch.manual_seed(0)
    noise = Image.fromarray((torch.rand(96, 96, 3) * 255).byte().numpy())
    return [*scenes, noise, Image.new("RGB", (64, 64), (250, 10, 10))]


def test_served_captions_are_the_same_in_any_batch_mix(served_captioner, scene_images):
    """40 random batches (1 to 8 requests, the served batch limit) of the images above, each
    request with its own beam width and length, against each image captioned alone."""
    option_choices = [Options(3, 30), Options(1, 30), Options(5, 12), Options(2, 4)]
    rng = random.Random(0)
    alone = {}
    for batch in range(40):
        picks = [rng.randrange(len(scene_images)) for _ in range(rng.randint(1, 8))]
        options = [rng.choice(option_choices) for _ in picks]
        batched = served_captioner.caption_images([scene_images[i] for i in picks], options)
        for pick, option, caption in zip(picks, options, batched, strict=True):
            key = (pick, option)
            if key not in alone:
                alone[key] = served_captioner.caption_images([scene_images[pick]], option)[0]
            assert_same_answers([alone[key]], [caption], (batch, *key))
    assert len(alone) > 20  # the mixes really covered images x options
