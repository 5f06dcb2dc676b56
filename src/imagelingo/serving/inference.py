"""Serving from a trained model directory inside this package (no MAR): the same CaptionRuntime
the TorchServe handler uses, with the eager encoder instead of its TorchScript trace."""

from __future__ import annotations

from pathlib import Path

import torch

from imagelingo.captioner import Captioner
from imagelingo.serving.runtime import CaptionRuntime


def runtime_from_model_dir(
    model_dir: Path, encoder: torch.nn.Module | None = None, encoder_weights: Path | None = None
) -> CaptionRuntime:
    from imagelingo.encoders import build_encoder

    captioner = Captioner.load(model_dir)
    if encoder is None:
        encoder, _ = build_encoder(captioner.encoder.name, encoder_weights)
    return CaptionRuntime(encoder, captioner.decoder, captioner.vocab, captioner.encoder.to_dict())
