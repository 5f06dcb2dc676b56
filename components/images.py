"""The container images the components declare: one naming scheme for what `make images` builds,
what .github/workflows/images.yml pushes and what the compiled pipeline names.

    <registry>/imagelingo:<tag>          ingest, vocab, features, train, evaluate, package
    <registry>/imagelingo-cuda:<tag>     features and train of a GPU run (compile --cuda)
    <registry>/imagelingo-deploy:<tag>   deploy (kserve SDK, boto3, mlflow; no torch)

registry: IMAGELINGO_REGISTRY (default ghcr.io/imagelingo); tag: IMAGELINGO_TAG (default the
package version, which the `v<version>` git tag that triggers images.yml must match). Tags are
mutable and KFP's cache keys on the image string, so once pushed the images are named by digest:
IMAGELINGO_IMAGE / IMAGELINGO_CUDA_IMAGE / IMAGELINGO_DEPLOY_IMAGE take a full reference
(`name:tag@sha256:...`), which images.yml writes to images.env, publishes with the compiled
pipeline, and retrain.yml reads. Set them, then `imagelingo compile` (or submit, which compiles
afresh).
"""

import os
import re

from imagelingo import __version__ as VERSION

REGISTRY = os.environ.get("IMAGELINGO_REGISTRY") or "ghcr.io/imagelingo"
TAG = os.environ.get("IMAGELINGO_TAG") or VERSION
NAMES = {
    "training": "imagelingo",
    "training-cuda": "imagelingo-cuda",
    "deploy": "imagelingo-deploy",
}
# name[:tag][@sha256:<64 hex>]
REFERENCE = re.compile(
    r"[a-z0-9][a-z0-9._/:-]*[a-z0-9](:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?"
)


def image(target: str, registry: str = REGISTRY, tag: str = TAG, digest: str = "") -> str:
    """The reference of one image; with a digest, pinned (`name:tag@sha256:...`)."""
    reference = f"{registry.rstrip('/')}/{NAMES[target]}:{tag}"
    return f"{reference}@{digest}" if digest else reference


def _configured(variable: str, target: str) -> str:
    value = os.environ.get(variable) or image(target)
    if not REFERENCE.fullmatch(value):
        raise ValueError(f"{variable}={value!r} is not an image reference (name:tag[@sha256:...])")
    return value


# ingest, vocab, features, train, evaluate, package: torch, timm, nltk, mlflow, the archiver
TRAINING_IMAGE = _configured("IMAGELINGO_IMAGE", "training")
# the same with PyPI's CUDA build of torch: features and train of a GPU run (compile --cuda)
TRAINING_CUDA_IMAGE = _configured("IMAGELINGO_CUDA_IMAGE", "training-cuda")
# deploy: the kserve SDK, boto3, mlflow
DEPLOY_IMAGE = _configured("IMAGELINGO_DEPLOY_IMAGE", "deploy")
