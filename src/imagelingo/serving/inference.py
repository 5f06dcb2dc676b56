"""Batched captioning of decoded images: one encoder pass and one beam search per batch."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from imagelingo.captioner import Captioner
from imagelingo.serving.protocol import Options


class CaptionService:
    """Loads a model directory once; captions lists of PIL images together."""

    def __init__(self, model_dir: Path, encoder: torch.nn.Module | None = None) -> None:
        from imagelingo.encoders import build_encoder, preprocess

        self.captioner = Captioner.load(model_dir)
        self.encoder = (
            encoder if encoder is not None else build_encoder(self.captioner.encoder.name)[0]
        )
        self._preprocess = preprocess

    @torch.inference_mode()
    def caption(self, images: list[Image.Image], options: Options = Options()) -> list[dict]:
        pixels = torch.stack([self._preprocess(image, self.captioner.encoder) for image in images])
        features = self.encoder(pixels)
        captions = self.captioner.caption_features(
            features, options.beam_width, options.max_len, batch_size=len(images)
        )
        return [
            {"caption": c.text, "tokens": c.words, "score": round(c.score, 4)} for c in captions
        ]
