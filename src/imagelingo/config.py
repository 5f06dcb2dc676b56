"""Parameters: params.yaml is their one home; the command line overrides single values."""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, TypeVar

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
    return copy.deepcopy(_parse(params_file.resolve(), params_file.stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _parse(params_file: Path, mtime_ns: int) -> dict:
    """Parsed once per version of the file: every settings object made reads it."""
    try:
        params = yaml.safe_load(params_file.read_text())
    except yaml.YAMLError as exc:
        raise ImageLingoError(f"{params_file}: not valid YAML: {exc}") from exc
    if not isinstance(params, dict):
        raise ImageLingoError(f"{params_file}: expected a mapping of sections")
    return params


Settings = TypeVar("Settings")


def settings(section: str):
    """Class decorator: a frozen dataclass of the settings in params.yaml's `section`. Its fields
    carry no default of their own: a field not given takes the file's value when the object is
    made (the file the CLI reads without --params), so params.yaml is their one home."""

    def decorate(cls):
        for name in cls.__annotations__:
            if not hasattr(cls, name):
                setattr(cls, name, dataclasses.field(default_factory=_default(section, name)))
        cls = dataclasses.dataclass(frozen=True)(cls)
        cls.SECTION = section
        return cls

    return decorate


def _default(section: str, key: str):
    def value() -> Any:
        try:
            return load_params()[section][key]
        except (KeyError, TypeError):
            raise ImageLingoError(f"{find_params_file()}: no {section}.{key}") from None

    return value


def from_params(cls: type[Settings], params: dict) -> Settings:
    """`cls` (a @settings dataclass) from a loaded, overridden params mapping. A key of its
    section that no field reads is an error, so a setting cannot be silently ignored."""
    values = params.get(cls.SECTION, {})
    fields = {f.name for f in dataclasses.fields(cls)}
    unread = sorted(set(values) - fields)
    if unread:
        raise ImageLingoError(
            f"params section {cls.SECTION!r}: {', '.join(unread)} not read by {cls.__name__}"
        )
    return cls(**values)


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


# `serve` is read by the CLI alone: its settings have no module of their own to live in.
@settings("serve")
class ServeConfig:
    """params.yaml's `serve` section: `imagelingo serve` and `imagelingo demo`."""

    runtime: str
    port: int
