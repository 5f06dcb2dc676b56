"""A packaged model store (`imagelingo package`): its TorchServe properties and model names,
which both local servers read (serving/torchserve.py, serving/kserve_predictor.py)."""

from __future__ import annotations

import json
from pathlib import Path

from imagelingo.errors import ImageLingoError


def read_properties(path: Path) -> dict[str, str]:
    properties = {}
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            properties[key.strip()] = value.strip()
    return properties


def store_properties(store_dir: Path) -> dict[str, str]:
    """The packaged config.properties of a model store, or a clear error naming what is missing."""
    packaged = Path(store_dir) / "config" / "config.properties"
    if not packaged.is_file():
        raise ImageLingoError(
            f"{packaged} not found: is {store_dir} a model store (`imagelingo package`)?"
        )
    return read_properties(packaged)


def model_names(properties: dict[str, str]) -> list[str]:
    return list(json.loads(properties["model_snapshot"])["models"])
