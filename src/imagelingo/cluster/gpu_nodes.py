"""Where the GPU tasks (features and train) run when a run asks for GPUs: the CUDA image and the
tolerations and node selector that reach tainted GPU nodes. Compile-time pipeline options
(`imagelingo compile/submit/schedule --cuda --gpu-toleration ... --gpu-node-selector ...`): the
`accelerator_count` parameter asks for the GPUs per run, these say which image and nodes.

The training image installs PyTorch's CPU wheel, so a GPU run with it fails its own device check
(imagelingo.devices.check_accelerator_request); `--cuda` names the `training-cuda` image
(components/Dockerfile), whose torch is PyPI's CUDA 13 build of the same version.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagelingo.errors import ImageLingoError

EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Toleration:
    key: str
    value: str = ""
    effect: str = ""

    @classmethod
    def parse(cls, text: str) -> Toleration:
        """KEY[=VALUE][:EFFECT], as `kubectl taint` writes a taint: `nvidia.com/gpu:NoSchedule`
        tolerates the taint of that key whatever its value (operator Exists), and
        `dedicated=gpu:NoSchedule` only that value (operator Equal)."""
        body, _, effect = text.partition(":")
        key, _, value = body.partition("=")
        if not key or (effect and effect not in EFFECTS):
            raise ImageLingoError(
                f"--gpu-toleration {text!r}: expected KEY[=VALUE][:EFFECT], EFFECT one of "
                f"{', '.join(EFFECTS)}"
            )
        return cls(key, value, effect)

    def kfp_arguments(self) -> dict:
        """The keyword arguments of kfp.kubernetes.add_toleration."""
        options = {"key": self.key, "operator": "Equal" if self.value else "Exists"}
        if self.value:
            options["value"] = self.value
        if self.effect:
            options["effect"] = self.effect
        return options


@dataclass(frozen=True)
class GpuNodes:
    cuda: bool = False
    tolerations: tuple[Toleration, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_options(cls, cuda: bool = False, tolerations=(), node_selector=()) -> GpuNodes:
        """From the CLI's strings: tolerations KEY[=VALUE][:EFFECT], node selector KEY=VALUE."""
        selector = []
        for text in node_selector:
            key, equals, value = text.partition("=")
            if not key or not equals:
                raise ImageLingoError(f"--gpu-node-selector {text!r}: expected LABEL=VALUE")
            selector.append((key, value))
        return cls(cuda, tuple(Toleration.parse(t) for t in tolerations), tuple(selector))
