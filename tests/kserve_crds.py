"""Validate objects against KServe's CRD schemas the way the API server does, for each KServe
version people run: 0.15.0 (Kubeflow 1.10), 0.15.2 (Kubeflow 1.11) and 0.20.0 (standalone).

The CRDs (tests/fixtures/kserve-crds/<version>, exact upstream copies) carry structural OpenAPI v3
schemas. At v0.15.0 only the InferenceService CRD is stored: its ServingRuntime and
ClusterServingRuntime CRDs are the same blobs as v0.15.2's (fixtures/kserve-crds/v0.15.0/
SOURCE.md). jsonschema checks them once three Kubernetes rules are made explicit:

- an object schema with `properties` and neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields: true` prunes unknown fields, and `kubectl apply`
  (strict field validation, the default since Kubernetes 1.27) rejects them: here they are an
  error (`additionalProperties: false`);
- `x-kubernetes-int-or-string: true` accepts an integer or a string;
- `nullable: true` also accepts null (anything else: null is an error here, stricter than the
  server, which would prune it).

`metadata` is `type: object` in every CRD (the API server checks ObjectMeta itself), so the few
ObjectMeta fields the project sets are checked by `OBJECT_META` below.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
from functools import cache
from pathlib import Path

import jsonschema
import yaml

FIXTURES = Path(__file__).parent / "fixtures" / "kserve-crds"
VERSIONS = ("0.15.0", "0.15.2", "0.20.0")
NEWEST = VERSIONS[-1]
CRD_DIR = FIXTURES / f"v{NEWEST}"
# where each version's runtime CRDs are: 0.15.0's are 0.15.2's blobs
SAME_BLOBS = {("0.15.0", "ServingRuntime"): "0.15.2", ("0.15.0", "ClusterServingRuntime"): "0.15.2"}
CRD_FILES = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): (
        "serving.kserve.io_clusterservingruntimes.yaml"
    ),
}
KINDS = {kind for _, kind in CRD_FILES}
# ObjectMeta as the API server validates it, limited to what a manifest may set.
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "resourceVersion": {"type": "string"},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
}


def _structural(schema):
    """A copy of a structural schema with the Kubernetes rules written as JSON Schema."""
    if isinstance(schema, list):
        return [_structural(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _structural(value) for key, value in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not preserve
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def crd_path(version: str, kind: str) -> Path:
    api_version = {k: a for a, k in CRD_FILES}[kind]
    folder = FIXTURES / f"v{SAME_BLOBS.get((version, kind), version)}"
    return folder / f"{CRD_FILES[api_version, kind]}.gz"


def check_checksums(version: str = NEWEST) -> None:
    folder = FIXTURES / f"v{version}"
    sums = dict(reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines())
    for name, digest in sums.items():
        data = gzip.decompress((folder / f"{name}.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest, f"{version} {name}: not upstream bytes"


@cache
def schema_for(api_version: str, kind: str, version: str = NEWEST) -> dict:
    if version not in VERSIONS:
        raise ValueError(f"no CRD fixtures for KServe {version}; have {VERSIONS}")
    check_checksums(version)
    check_checksums(SAME_BLOBS.get((version, kind), version))
    text = gzip.decompress(crd_path(version, kind).read_bytes())  # 1-2 MB: the C loader
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = _structural(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["status"] = {"not": {}}  # a manifest never sets status
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    return schema


def errors(document: dict, version: str = NEWEST) -> list[str]:
    """Every schema violation of one InferenceService/ServingRuntime against KServe `version`'s
    CRD, as 'path: message'."""
    key = (document.get("apiVersion"), document.get("kind"))
    if key not in CRD_FILES:
        return [f"no KServe {version} CRD serves apiVersion {key[0]!r} kind {key[1]!r}"]
    validator = jsonschema.Draft7Validator(schema_for(*key, version))
    return sorted(
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(document)
    )


def assert_valid(document: dict, versions: tuple[str, ...] = VERSIONS) -> None:
    """Valid against the CRDs of every KServe version in `versions` (default: all of them)."""
    name = document.get("metadata", {}).get("name")
    for version in versions:
        found = errors(document, version)
        assert not found, f"KServe {version}: {document.get('kind')} {name}: " + "; ".join(found)
