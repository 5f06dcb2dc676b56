"""Captioner: decoder, vocabulary and encoder spec (plus the encoder, to caption images), loaded
from a trained model directory or from a serving bundle.

    model directory (`imagelingo train`)   decoder.safetensors, config.json, vocab.json
    serving bundle (inside the MAR)         encoder.pt (TorchScript of the CNN trunk: images
                                            [B, 3, S, S] -> regions [B, R, C]), decoder.pt (a
                                            state dict, loaded with weights_only=True),
                                            config.json, vocab.json, serving.json (optional)

config.json is {"decoder": DecoderConfig fields, "encoder": EncoderSpec fields}: weights plus plain
config, no pickled modules. A model directory holds no encoder: imagelingo.captioning.load_captioner
builds it (timm or torchvision weights), which only the training environment has.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from PIL import Image

from .decoder import BeamResult, CaptionDecoder, DecoderConfig, beam_search
from .errors import ImageLingoError
from .options import Options
from .preprocess import EncoderSpec, preprocess
from .quantized import RowInt8Decoder
from .vocab import Vocab

WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE = "decoder.safetensors", "config.json", "vocab.json"
MODEL_FILES = (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE)
ENCODER_FILE, DECODER_FILE = "encoder.pt", "decoder.pt"
BUNDLE_FILES = (ENCODER_FILE, DECODER_FILE, CONFIG_FILE, VOCAB_FILE)
SERVING_FILE = "serving.json"  # optional, in a bundle: Speed's fields (params.yaml `package`)
ENCODER_PRECISIONS, DECODER_PRECISIONS = ("fp32", "bf16"), ("fp32", "int8")


@dataclass
class Caption:
    words: list[str]
    score: float  # sum of log-probabilities
    alphas: torch.Tensor  # [len(words), regions]

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class Speed:
    """How a served captioner runs: the bundle's serving.json, written from params.yaml's
    `package` section. Without the file a bundle runs as trained: fp32, torch's threads.
    The precisions are kept only while the served test BLEU-4 stays within 0.002 of fp32's
    (benchmarks/RESULTS.md, serving)."""

    torch_threads: int = 0  # 0: torch's default
    # bf16: the encoder under CPU autocast, on CPUs with native bf16 (AVX-512 BF16, AMX);
    # elsewhere it would be emulated and slower, so it stays fp32 there
    encoder_precision: str = "fp32"
    # int8: the decoder's Linear and LSTMCell weights in int8, each activation row quantized
    # by its own range (inference/quantized.py)
    decoder_precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.encoder_precision not in ENCODER_PRECISIONS:
            raise ImageLingoError(
                f"encoder_precision {self.encoder_precision!r}: expected one of "
                f"{', '.join(ENCODER_PRECISIONS)}"
            )
        if self.decoder_precision not in DECODER_PRECISIONS:
            raise ImageLingoError(
                f"decoder_precision {self.decoder_precision!r}: expected one of "
                f"{', '.join(DECODER_PRECISIONS)}"
            )

    @classmethod
    def read(cls, bundle_dir: Path) -> Speed:
        settings = Path(bundle_dir) / SERVING_FILE
        data = json.loads(settings.read_text()) if settings.is_file() else {}
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ImageLingoError(f"{settings}: unknown settings {unknown}")
        return cls(**data)


class Captioner:
    def __init__(
        self,
        decoder: CaptionDecoder,
        vocab: Vocab,
        spec: EncoderSpec,
        encoder: torch.nn.Module | None = None,
        speed: Speed = Speed(),
    ) -> None:
        self.vocab, self.spec, self.speed = vocab, spec, speed
        self.decoder = decoder.eval()
        if speed.decoder_precision == "int8":
            # each row quantized by its own range: a caption does not depend on its batch
            self.decoder = RowInt8Decoder(self.decoder).eval()
        self.encoder = encoder.eval() if encoder is not None else None
        self.encoder_bf16 = speed.encoder_precision == "bf16" and native_bf16()

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def device(self) -> torch.device:
        return module_device(self.decoder)

    def to(self, device: torch.device) -> Captioner:
        """Run the decoder (and encoder) on `device`; features and images are moved there as
        they come. An int8 decoder is CPU only: it stays."""
        if self.speed.decoder_precision != "int8":
            self.decoder.to(device)
        if self.encoder is not None:
            self.encoder.to(device)
        return self

    @classmethod
    def load(cls, path: Path) -> Captioner:
        """A serving bundle (with its encoder) or a trained model directory (without one)."""
        path = Path(path)
        if (path / ENCODER_FILE).is_file():
            return cls._load_bundle(path)
        for name in MODEL_FILES:
            if not (path / name).is_file():
                raise ImageLingoError(
                    f"{path / name} not found: is {path} a trained "
                    "model directory (`imagelingo train --out`)?"
                )
        # safetensors is only where training ran; the MAR holds a bundle, which needs torch alone
        from safetensors.torch import load_file

        return cls._from_files(path, load_file(path / WEIGHTS_FILE))

    @classmethod
    def _load_bundle(cls, bundle_dir: Path) -> Captioner:
        missing = [name for name in BUNDLE_FILES if not (bundle_dir / name).is_file()]
        if missing:
            raise ImageLingoError(f"{bundle_dir}: not a serving bundle, missing {missing}")
        speed = Speed.read(bundle_dir)
        apply_thread_setting(speed.torch_threads)
        state = torch.load(bundle_dir / DECODER_FILE, map_location="cpu", weights_only=True)
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; see package.py
            warnings.simplefilter("ignore", FutureWarning)
            encoder = torch.jit.load(str(bundle_dir / ENCODER_FILE), map_location="cpu")
        return cls._from_files(bundle_dir, state, encoder, speed)

    @classmethod
    def _from_files(
        cls,
        directory: Path,
        state: dict,
        encoder: torch.nn.Module | None = None,
        speed: Speed = Speed(),
    ) -> Captioner:
        config = json.loads((directory / CONFIG_FILE).read_text())
        decoder = CaptionDecoder(DecoderConfig(**config["decoder"]))
        decoder.load_state_dict(state)
        spec = EncoderSpec.from_dict(config["encoder"])
        return cls(decoder, Vocab.load(directory / VOCAB_FILE), spec, encoder, speed)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised images [N, 3, S, S] -> fp32 region features [N, R, F]: the one place the
        encoder runs (its precision, memory format), one image per pass. oneDNN picks its
        convolution kernels by batch size (and threads), so an image encoded inside a batch gets
        features ~1e-5 away from its own pass (bit-exact only between equal shapes): a served
        caption would depend on how many requests came with it (issue 30). Alone, each image
        always takes the same path (its cost: benchmarks/RESULTS.md, issue 30)."""
        if self.encoder is None:
            raise ImageLingoError(
                "this captioner has no encoder: load a serving bundle, or a model directory "
                "with imagelingo.captioning.load_captioner"
            )
        # channels_last runs the depthwise convolutions ~30% faster on CPU (RESULTS.md); the
        # features differ by ~1e-5, far below the fp16 rounding of the training features.
        # bf16 autocast halves the encoder's time on these CPUs (RESULTS.md, serving); it works
        # on the TorchScript trace too, in the runtime's torch 2.1 as in training's torch.
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.encoder_bf16),
        ):
            pixels = pixels.to(module_device(self.encoder))
            features = torch.cat(
                [
                    self.encoder(image.unsqueeze(0).contiguous(memory_format=torch.channels_last))
                    for image in pixels
                ]
            )
        return features.float()

    def caption_features(
        self,
        features: torch.Tensor,
        beam_width: int,
        max_len: int,
        length_penalty: float = 0.0,
        batch_size: int = 100,
    ) -> list[Caption]:
        """Caption a batch of region features [N, R, F], `batch_size` images per beam search."""
        captions = []
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            captions += self._beam_search(chunk, beam_width, max_len, length_penalty)
        return captions

    def caption_images(
        self, images: Sequence[Image.Image], options: Sequence[Options] | Options = Options()
    ) -> list[Caption]:
        """One caption per RGB image. `options` is one for all, or one per image: all images
        share one encoder pass, and those that share options one beam search."""
        if isinstance(options, Options):
            options = [options] * len(images)
        features = self.encode(torch.stack([preprocess(image, self.spec) for image in images]))
        groups: dict[Options, list[int]] = defaultdict(list)
        for index, option in enumerate(options):
            groups[option].append(index)
        captions: list[Caption | None] = [None] * len(images)
        for option, indices in groups.items():
            beams = self._beam_search(features[indices], option.beam_width, option.max_len)
            # no zip(strict=True): this module runs on the runtime's Python 3.9
            assert len(beams) == len(indices), "one caption per image"
            for index, caption in zip(indices, beams):  # noqa: B905 (Python 3.9)
                captions[index] = caption
        return captions  # type: ignore[return-value]

    def _beam_search(
        self, features: torch.Tensor, beam_width: int, max_len: int, length_penalty: float = 0.0
    ) -> list[Caption]:
        with torch.inference_mode():
            results: list[BeamResult] = beam_search(
                self.decoder,
                features.float().to(self.device),
                beam_width,
                max_len,
                self.vocab.start_id,
                self.vocab.end_id,
                length_penalty,
                # a caption with "<unk>" in it is never the better answer
                banned_ids=(self.vocab.pad_id, self.vocab.start_id, self.vocab.unk_id),
            )
        return [Caption(self.vocab.decode(r.tokens), r.score, r.alphas) for r in results]


def save_model_dir(
    model_dir: Path, decoder: CaptionDecoder, vocab: Vocab, spec: EncoderSpec
) -> None:
    """Write a model directory that Captioner.load reads (training calls this)."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".{WEIGHTS_FILE}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in decoder.state_dict().items()}, tmp)
    tmp.replace(model_dir / WEIGHTS_FILE)
    config = {"decoder": decoder.config.to_dict(), "encoder": spec.to_dict()}
    (model_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    vocab.save(model_dir / VOCAB_FILE)


def apply_thread_setting(configured: int) -> None:
    """torch threads for this worker: $IMAGELINGO_TORCH_THREADS, else the bundle's setting.
    (TorchServe launches workers with OMP_NUM_THREADS=1, which halves throughput on 2 cores.)"""
    threads = int(os.environ.get("IMAGELINGO_TORCH_THREADS") or configured)
    if threads > 0:
        torch.set_num_threads(threads)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights are (cpu for one without parameters)."""
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's own test: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
