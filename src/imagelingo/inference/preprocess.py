"""What the encoder sees: an RGB image resized to a square and normalised, and the spec that says
how (EncoderSpec, saved in the model's config.json).

Feature extraction (training) and captioning (the CLI, both servers) all call `to_pixels`, so
they see the same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from PIL import Image
from torchvision.transforms import functional as TF


@dataclass(frozen=True)
class EncoderSpec:
    """What a consumer of the features must know to reproduce them from a raw image."""

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EncoderSpec:
        return cls(
            data["name"],
            int(data["image_size"]),
            tuple(data["mean"]),
            tuple(data["std"]),
            int(data["feature_dim"]),
        )


def preprocess(image: Image.Image, spec: EncoderSpec) -> torch.Tensor:
    """RGB image -> the normalised [3, S, S] tensor the spec's encoder takes."""
    return to_pixels(image, spec.image_size, spec.mean, spec.std)


def to_pixels(
    image: Image.Image,
    size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> torch.Tensor:
    """RGB image -> normalised [3, size, size] tensor, resized to a square without cropping."""
    return TF.normalize(TF.to_tensor(encoder_sized(image, size)), mean, std)


def encoder_sized(image: Image.Image, size: int) -> Image.Image:
    """The RGB image resized as the encoder sees it. Resizing the result again to the same size
    is a copy, so calling this early (to hold less memory) changes no pixel."""
    return image.convert("RGB").resize((size, size), Image.BICUBIC)
