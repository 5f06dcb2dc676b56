"""What every pod of a compiled pipeline gets beside its stage's own needs, chosen when compiling
(`imagelingo compile/submit/schedule --image-pull-secret ... --cuda --gpu-toleration ...
--gpu-node-selector ...`): one value, passed whole from the CLI to the pipeline function."""

from __future__ import annotations

from dataclasses import dataclass

from imagelingo.cluster.gpu_nodes import GpuNodes


@dataclass(frozen=True)
class PodOptions:
    pull_secrets: tuple[str, ...] = ()  # image pull Secrets for every pod (private GHCR images)
    gpu: GpuNodes = GpuNodes()  # the image and nodes of the GPU tasks (features and train)
