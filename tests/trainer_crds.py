"""Validate a TrainJob against a Kubeflow Trainer release's CRD schema the way the API server
does: the structural-schema rules of tests/kserve_crds.py, on tests/fixtures/kubeflow-trainer/<tag>
(exact upstream copies: v2.1.0, what Kubeflow 1.11.0 installs, and v2.3.0, the newest)."""

from __future__ import annotations

import copy
import gzip
import hashlib
from functools import cache
from pathlib import Path

import jsonschema
import yaml
from kserve_crds import OBJECT_META, _structural

ROOT = Path(__file__).parent / "fixtures" / "kubeflow-trainer"
VERSIONS = tuple(sorted(p.name for p in ROOT.iterdir() if p.is_dir()))
CRD_FILE = "trainer.kubeflow.org_trainjobs.yaml"
API_VERSION, KIND = "trainer.kubeflow.org/v1alpha1", "TrainJob"


def fixtures(version: str) -> Path:
    return ROOT / version


@cache
def schema(version: str) -> dict:
    data = gzip.decompress((fixtures(version) / f"{CRD_FILE}.gz").read_bytes())
    (expected,) = [
        line.split()[0]
        for line in (fixtures(version) / "SHA256SUMS").read_text().splitlines()
        if line.split()[1] == CRD_FILE
    ]
    assert hashlib.sha256(data).hexdigest() == expected, f"{CRD_FILE}: not the upstream bytes"
    crd = yaml.safe_load(data)
    assert crd["spec"]["group"] == "trainer.kubeflow.org" and crd["spec"]["names"]["kind"] == KIND
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1" and v["served"]]
    out = _structural(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    out["properties"]["metadata"] = OBJECT_META
    out["properties"]["status"] = {"not": {}}  # a manifest never sets status
    out["required"] = sorted({*out.get("required", []), "apiVersion", "kind", "metadata"})
    out["properties"]["apiVersion"] = {"const": API_VERSION}
    out["properties"]["kind"] = {"const": KIND}
    return out


def errors(document: dict, version: str) -> list[str]:
    """Every violation of Trainer `version`'s CRD schema by one TrainJob, as 'path: message'."""
    validator = jsonschema.Draft7Validator(schema(version))
    return sorted(
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    )
