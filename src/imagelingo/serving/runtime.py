"""The captioner as served: a self-contained bundle of plain files, loaded with torch only.

A serving bundle (what goes inside the MAR) holds:

    encoder.pt    TorchScript of the CNN trunk: images [B, 3, S, S] -> regions [B, R, C]
    decoder.pt    the decoder's state dict (tensors only; loaded with weights_only=True)
    config.json   {"decoder": DecoderConfig fields, "encoder": {name, image_size, mean, std, ...}}
    vocab.json    {"words": [...]}

This module and the ones it imports use relative imports and need only torch, torchvision and
Pillow, so the same source runs from the installed package and from an unpacked MAR inside the
stock TorchServe image (no timm, no nltk, no `imagelingo`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image

from ..data.vocab import Vocab
from ..errors import ImageLingoError
from ..model import CaptionDecoder, DecoderConfig, beam_search
from .images import to_pixels
from .protocol import Options

ENCODER_FILE, DECODER_FILE, CONFIG_FILE, VOCAB_FILE = (
    "encoder.pt",
    "decoder.pt",
    "config.json",
    "vocab.json",
)
BUNDLE_FILES = (ENCODER_FILE, DECODER_FILE, CONFIG_FILE, VOCAB_FILE)
SERVING_FILE = "serving.json"  # optional: {"torch_threads": N}


def apply_thread_setting(bundle_dir: Path) -> None:
    """torch threads for this worker: $IMAGELINGO_TORCH_THREADS, else the bundle's setting.
    (TorchServe launches workers with OMP_NUM_THREADS=1, which halves throughput on 2 cores.)"""
    settings = bundle_dir / SERVING_FILE
    configured = (
        json.loads(settings.read_text()).get("torch_threads", 0) if settings.is_file() else 0
    )
    threads = int(os.environ.get("IMAGELINGO_TORCH_THREADS") or configured)
    if threads > 0:
        torch.set_num_threads(threads)


class CaptionRuntime:
    """Encoder + decoder + vocabulary; captions a batch of images with one encoder pass."""

    def __init__(
        self,
        encoder: torch.nn.Module,
        decoder: CaptionDecoder,
        vocab: Vocab,
        encoder_config: dict,
    ) -> None:
        self.encoder, self.decoder, self.vocab = encoder.eval(), decoder.eval(), vocab
        self.image_size = int(encoder_config["image_size"])
        self.mean = tuple(encoder_config["mean"])
        self.std = tuple(encoder_config["std"])

    @classmethod
    def load(cls, bundle_dir: Path) -> CaptionRuntime:
        bundle_dir = Path(bundle_dir)
        missing = [name for name in BUNDLE_FILES if not (bundle_dir / name).is_file()]
        if missing:
            raise ImageLingoError(f"{bundle_dir}: not a serving bundle, missing {missing}")
        apply_thread_setting(bundle_dir)
        config = json.loads((bundle_dir / CONFIG_FILE).read_text())
        decoder = CaptionDecoder(DecoderConfig(**config["decoder"]))
        state = torch.load(bundle_dir / DECODER_FILE, map_location="cpu", weights_only=True)
        decoder.load_state_dict(state)
        with warnings.catch_warnings():  # TorchScript is deprecated upstream; see package.py
            warnings.simplefilter("ignore", FutureWarning)
            encoder = torch.jit.load(str(bundle_dir / ENCODER_FILE), map_location="cpu")
        return cls(encoder, decoder, Vocab.load(bundle_dir / VOCAB_FILE), config["encoder"])

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([to_pixels(i, self.image_size, self.mean, self.std) for i in images])

    @torch.inference_mode()
    def caption(
        self, images: list[Image.Image], options: list[Options] | Options = Options()
    ) -> list[dict]:
        """One caption dict per image. `options` is one for all, or one per image: images that
        share options are beam-searched together, all images share one encoder pass."""
        if isinstance(options, Options):
            options = [options] * len(images)
        # channels_last runs the depthwise convolutions ~30% faster on CPU (RESULTS.md); the
        # features differ by ~1e-5, far below the fp16 rounding of the training features.
        pixels = self.pixels(images).contiguous(memory_format=torch.channels_last)
        features = self.encoder(pixels)
        groups: dict[Options, list[int]] = defaultdict(list)
        for index, option in enumerate(options):
            groups[option].append(index)
        results: list[dict] = [{}] * len(images)
        for option, indices in groups.items():
            beams = beam_search(
                self.decoder,
                features[indices].float(),
                option.beam_width,
                option.max_len,
                self.vocab.start_id,
                self.vocab.end_id,
                # a caption with "<unk>" in it is never the better answer (as in evaluation)
                banned_ids=(self.vocab.pad_id, self.vocab.start_id, self.vocab.unk_id),
            )
            # no zip(strict=True): this module runs on the runtime's Python 3.9
            assert len(beams) == len(indices), "one beam per image"
            for index, beam in zip(indices, beams):  # noqa: B905 (Python 3.9)
                words = self.vocab.decode(beam.tokens)
                results[index] = {
                    "caption": " ".join(words),
                    "tokens": words,
                    "score": round(beam.score, 4),
                }
        return results
