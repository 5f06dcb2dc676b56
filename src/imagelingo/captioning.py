"""A trained model directory as a Captioner that captions images, where the training code is
installed: its decoder, vocabulary and encoder spec (imagelingo.inference), and the encoder built
from its pretrained weights (imagelingo.encoders: timm or torchvision). A serving bundle carries
its encoder as TorchScript and needs none of this (inference.captioner.Captioner.load).

Packaging, model logging and `imagelingo caption --model` take the captioner from here;
imagelingo.encoders stays feature extraction alone.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imagelingo.encoders import build_encoder
from imagelingo.errors import ImageLingoError
from imagelingo.inference.captioner import Caption, Captioner
from imagelingo.inference.options import Options
from imagelingo.inference.preprocess import encoder_sized


def load_captioner(model_dir: Path, encoder_weights: Path | None = None) -> Captioner:
    """A trained model directory's Captioner with its encoder built, so it captions images."""
    captioner = Captioner.load(model_dir)
    captioner.encoder = build_encoder(captioner.spec.name, encoder_weights)[0]
    return captioner


def caption_image_files(
    model_dir: Path, paths: list[Path], beam_width: int, max_len: int, device: str = "cpu"
) -> list[Caption]:
    """Caption image files end to end (`imagelingo caption --model`): one batch."""
    from imagelingo.devices import resolve_device

    captioner = load_captioner(model_dir).to(resolve_device(device))
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:  # resized while the file is open, as served
                images.append(encoder_sized(image, captioner.image_size))
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageLingoError(f"{path}: cannot read image: {exc}") from exc
    return captioner.caption_images(images, Options(beam_width, max_len))
