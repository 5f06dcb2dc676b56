"""The support matrix: the Kubeflow releases ImageLingo's cluster artifacts are built for.

Each target names the versions its release pins (../shared/cluster-reference/platforms.md, from
kubeflow/manifests' own tables) and what the pipeline gets there. `imagelingo compile --target`
writes one pipeline spec per target; `submit`/`schedule` read the backend's version from its API
and pick the target, or refuse naming the supported ones. The README's matrix is this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagelingo.errors import ImageLingoError


@dataclass(frozen=True)
class Target:
    name: str  # what `--target` takes and the compiled file is named by
    kubeflow: str  # the Kubeflow release ("" for standalone KFP, KServe and Trainer installs)
    kfp_backend: str  # the KFP API server / driver tag
    kserve: str
    knative: str
    trainer: str  # Kubeflow Trainer v2 release installed by default ("": none)
    training_operator: str  # training-operator v1 (PyTorchJob) release installed ("": none)
    object_store: str

    @property
    def fan_in(self) -> bool:
        """dsl.Collected over a ParallelFor: the driver resolves it from KFP 2.14.0 on
        (kubeflow/pipelines PR #11725; cluster-reference README R3)."""
        return _version(self.kfp_backend) >= (2, 14, 0)

    @property
    def nested_retry(self) -> bool:
        """Retry policies of tasks in a sub-DAG (dsl.If, ParallelFor): honoured from 2.14.0
        (PR #11908; before, argocompiler/container.go:508-518 looks only at root tasks)."""
        return _version(self.kfp_backend) >= (2, 14, 0)

    @property
    def train_engines(self) -> tuple[str, ...]:
        """`task` everywhere; `trainjob` where a Kubeflow Trainer v2 is installed."""
        return ("task", "trainjob") if self.trainer else ("task",)

    @property
    def feature_shards(self) -> int:
        """Feature extraction fans out only where the backend can fan the shards back in."""
        return 2 if self.fan_in else 1

    @property
    def pipeline_file(self) -> str:
        return f"imagelingo_pipeline.{self.name}.yaml"

    @property
    def description(self) -> str:
        """e.g. "Kubeflow 1.11.0: KFP backend 2.15.0, KServe 0.15.2"."""
        where = f"Kubeflow {self.kubeflow}" if self.kubeflow else "standalone installs"
        return f"{where}: KFP backend {self.kfp_backend}, KServe {self.kserve}"


def _version(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tag.lstrip("v").split(".")[:3])


TARGETS = {
    t.name: t
    for t in (
        Target(
            name="kubeflow-1.10",
            kubeflow="1.10.2",
            kfp_backend="2.5.0",
            kserve="0.15.0",
            knative="1.16.2",
            trainer="",
            training_operator="v1.9.2",
            object_store="MinIO",
        ),
        Target(
            name="kubeflow-1.11",
            kubeflow="1.11.0",
            kfp_backend="2.15.0",
            kserve="0.15.2",
            knative="1.16.2",
            trainer="v2.1.0",
            training_operator="",
            object_store="SeaweedFS",
        ),
        # The newest KFP backend verified (tag 2.17.0: its protos, the driver's accelerator,
        # fan-in and retry code and the cache key read at that tag), installed standalone beside
        # the newest KServe (0.20.0: its kserve-deps.env names Knative 1.21.1) and Trainer.
        Target(
            name="kfp-2.17",
            kubeflow="",
            kfp_backend="2.17.0",
            kserve="0.20.0",
            knative="1.21.1",
            trainer="v2.3.0",
            training_operator="",
            object_store="",
        ),
    )
}
DEFAULT_TARGET = "kubeflow-1.11"  # what `imagelingo run` runs: the newest Kubeflow release


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ImageLingoError(f"target {name!r}: expected one of {', '.join(TARGETS)}") from None


def target_for_backend(version: str) -> Target:
    """The target whose KFP backend is `version` (as the API's healthz reports it)."""
    wanted = version.strip().lstrip("v")
    for candidate in TARGETS.values():
        if candidate.kfp_backend == wanted:
            return candidate
    supported = ", ".join(f"{t.kfp_backend} ({t.name})" for t in TARGETS.values())
    raise ImageLingoError(
        f"KFP backend {version or '(unknown)'} is not supported: supported backends {supported}"
    )
