"""The KFP backends' own message definitions, compiled from the protos each backend builds with
(tests/fixtures/kubeflow-pipelines/<tag>/, see its SOURCE.md), and a strict parse with them.

Both backends parse leniently (2.5.0 jsonpb AllowUnknownFields, 2.15.0 protojson DiscardUnknown:
backend/src/common/util/json.go:72-76 in each tag's copy under ../shared/cluster-reference/): a
field their proto lacks is dropped without a word. Parsing strictly here turns that silent drop
into a failure that names the field. Each tag's files go into a descriptor pool of their own
(protoc --descriptor_set_out), so the two versions of `pipeline_spec.proto` never meet.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import google.protobuf
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

FIXTURES = Path(__file__).parent / "fixtures" / "kubeflow-pipelines"
BACKENDS = ("2.5.0", "2.15.0", "2.17.0")


def _checked(tag: str) -> Path:
    """The tag's folder, its files verified against SHA256SUMS."""
    for line in (FIXTURES / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        if name.startswith(f"{tag}/"):
            actual = hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest()
            assert actual == digest, f"{name}: sha256 {actual}, expected {digest}"
    return FIXTURES / tag


@functools.cache
def pool(tag: str) -> descriptor_pool.DescriptorPool:
    import grpc_tools

    folder = _checked(tag)
    includes = [
        folder,
        Path(grpc_tools.__file__).parent / "_proto",  # google/protobuf/*.proto
        Path(google.protobuf.__file__).parents[2],  # google/rpc/status.proto (googleapis)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        command = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *(f"-I{path}" for path in includes),
            f"--descriptor_set_out={out}",
            "--include_imports",
            "pipeline_spec.proto",
            "kubernetes_executor_config.proto",
        ]
        subprocess.run(command, check=True, cwd=folder, env={**os.environ})
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    result = descriptor_pool.DescriptorPool()
    for file in files.file:
        result.Add(file)
    return result


def message(tag: str, full_name: str):
    """A message class of backend `tag`, e.g. ml_pipelines.PipelineSpec."""
    return message_factory.GetMessageClass(pool(tag).FindMessageTypeByName(full_name))


def strict_parse(tag: str, full_name: str, document: dict) -> None:
    """Parse `document` (the compiled YAML's JSON form) as `full_name`; a field the backend's
    proto does not define raises json_format.ParseError naming it."""
    json_format.ParseDict(document, message(tag, full_name)())


def parse_pipeline(tag: str, spec: dict, platform: dict) -> list[str]:
    """Every part of a compiled pipeline that backend `tag` reads as a typed message: the
    PipelineSpec, each executor (a Struct inside it, parsed by the driver as
    PipelineDeploymentConfig.ExecutorSpec) and each Kubernetes executor config. Returns the
    problems, one per part."""
    problems = []
    parts = [("pipeline spec", "ml_pipelines.PipelineSpec", spec)]
    parts += [
        (f"executor {label}", "ml_pipelines.PipelineDeploymentConfig.ExecutorSpec", executor)
        for label, executor in spec["deploymentSpec"]["executors"].items()
    ]
    kubernetes = platform.get("platforms", {}).get("kubernetes", {})
    parts += [
        (f"kubernetes config {label}", "kfp_kubernetes.KubernetesExecutorConfig", config)
        for label, config in kubernetes.get("deploymentSpec", {}).get("executors", {}).items()
    ]
    for what, full_name, document in parts:
        try:
            strict_parse(tag, full_name, document)
        except json_format.ParseError as exc:
            problems.append(f"{what}: {exc}")
    return problems
