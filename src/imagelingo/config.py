"""Parameters: params.yaml is their one home; the command line overrides single values."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from imagelingo.errors import ImageLingoError

REPO_ROOT = Path(__file__).resolve().parents[2]


def find_params_file(explicit: Path | None = None) -> Path:
    """--params, else $IMAGELINGO_PARAMS, else ./params.yaml, else the source tree's copy."""
    candidates = [
        explicit,
        os.environ.get("IMAGELINGO_PARAMS"),
        Path("params.yaml"),
        REPO_ROOT / "params.yaml",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
        if candidate == explicit and explicit is not None:
            raise ImageLingoError(f"params file not found: {explicit}")
    raise ImageLingoError("no params.yaml found: pass --params or set IMAGELINGO_PARAMS")


def load_params(path: Path | None = None) -> dict[str, dict[str, Any]]:
    params_file = find_params_file(path)
    try:
        params = yaml.safe_load(params_file.read_text())
    except yaml.YAMLError as exc:
        raise ImageLingoError(f"{params_file}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ImageLingoError(f"{params_file}: expected a mapping of sections")
    return params


def apply_overrides(params: dict, overrides: list[str] | dict[str, Any]) -> dict:
    """Return a copy with `section.key=value` overrides applied; unknown keys are an error."""
    result = copy.deepcopy(params)
    items = (
        overrides.items()
        if isinstance(overrides, dict)
        else (_split_override(o) for o in overrides)
    )
    for dotted, value in items:
        section, _, key = dotted.partition(".")
        if section not in result or key not in result[section]:
            known = ", ".join(f"{s}.{k}" for s, v in result.items() if s != "demo" for k in v)
            raise ImageLingoError(f"unknown parameter {dotted!r}; known: {known}")
        result[section][key] = value
    return result


def _split_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ImageLingoError(f"parameter override {text!r}: expected section.key=value")
    return key.strip(), yaml.safe_load(raw)
