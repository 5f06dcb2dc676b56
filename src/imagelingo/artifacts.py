"""Artifact directories and their metadata.json: what produced them, from what, with which settings.

Lineage can be followed from the files alone, without the orchestrator that ran the stage.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from imagelingo import __version__

METADATA_FILE = "metadata.json"
CROSS_ENTROPY_DIR = "cross_entropy"  # in a model dir after SCST: the CE model it started from


def code_version() -> str:
    """The git commit of the source tree when there is one, else the package version."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return f"imagelingo-{__version__}"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be read by others
    os.replace(tmp, path)


def write_metadata(
    out_dir: Path,
    stage: str,
    inputs: dict[str, str],
    params: dict[str, Any],
    counts: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Record the stage's lineage next to its outputs and return the record."""
    record = {
        "stage": stage,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "inputs": {name: str(path) for name, path in inputs.items()},
        "params": params,
        "counts": counts,
        **extra,
    }
    write_json_atomic(Path(out_dir) / METADATA_FILE, record)
    return record


def read_metadata(artifact_dir: Path) -> dict[str, Any]:
    path = Path(artifact_dir) / METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
