"""The component images: the Dockerfile lints clean; one naming scheme (components/images.py) for
what the Makefile builds, what images.yml pushes and pins by digest, and what the compiled
components declare; each image installs one requirements list with the lock."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from imagelingo.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from components.images import (  # noqa: E402
    DEPLOY_IMAGE,
    TRAINING_CUDA_IMAGE,
    TRAINING_IMAGE,
    VERSION,
    image,
)

# Dockerfile stage -> (Makefile variable, images.env variable)
IMAGES = {
    "training": ("IMAGE", "IMAGELINGO_IMAGE"),
    "training-cuda": ("CUDA_IMAGE", "IMAGELINGO_CUDA_IMAGE"),
    "deploy": ("DEPLOY_IMAGE", "IMAGELINGO_DEPLOY_IMAGE"),
}

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [HADOLINT, str(REPO_ROOT / "components" / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_run_as_a_non_root_numeric_user():
    text = (REPO_ROOT / "components" / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert len(users) == len(IMAGES) and all(u.isdigit() and u != "0" for u in users)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text, flags=re.M)


def test_the_training_image_has_the_java_runtime_the_caption_metrics_need():
    """evaluate's COCO metrics run Java (PTB tokenizer, METEOR); the deploy image needs none."""
    text = (REPO_ROOT / "components" / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM (\S+ AS [\w-]+)\n(.*?)(?=^FROM |\Z)", text, flags=re.M | re.S))
    assert (
        "apt-get install -y --no-install-recommends openjdk-17-jre-headless"
        in stages["base AS java"]
    )
    assert "rm -rf /var/lib/apt/lists/*" in stages["base AS java"]
    # both training images (CPU and CUDA torch) are built on it
    assert {"java AS training", "java AS training-cuda"} <= set(stages)
    assert "apt-get" not in stages["${PYTHON_IMAGE} AS base"] + stages["base AS deploy"]


def makefile_default(name: str) -> str:
    match = re.search(rf"^{name} \?= (\S+)$", (REPO_ROOT / "Makefile").read_text(), flags=re.M)
    assert match, name
    return match.group(1)


def test_makefile_builds_the_images_the_components_declare():
    makefile = (REPO_ROOT / "Makefile").read_text()
    registry, tag = makefile_default("REGISTRY"), makefile_default("TAG")
    expand = {"$(REGISTRY)": registry, "$(TAG)": tag}

    def expanded(name):
        value = makefile_default(name)
        for key, replacement in expand.items():
            value = value.replace(key, replacement)
        return value

    assert expanded("IMAGE") == TRAINING_IMAGE == image("training")
    assert expanded("DEPLOY_IMAGE") == DEPLOY_IMAGE == image("deploy")
    assert expanded("CUDA_IMAGE") == TRAINING_CUDA_IMAGE == image("training-cuda")
    assert tag == VERSION
    for stage, (variable, _) in IMAGES.items():
        assert f"--target {stage} -t $({variable})" in makefile


def test_the_images_workflow_pushes_what_the_pipeline_names_and_pins_digests():
    workflow = (REPO_ROOT / ".github" / "workflows" / "images.yml").read_text()
    assert 'make images REGISTRY="$REGISTRY" TAG="$TAG"' in workflow
    for target, (_, variable) in IMAGES.items():
        pushed = image(target, registry="$REGISTRY", tag="$TAG")
        assert f'docker push "{pushed}"' in workflow
        assert f"{variable}={pushed}@$(docker inspect" in workflow
    # the tag is the package version, the default TAG of the scheme
    assert 'test "$GITHUB_REF_NAME" = "v$version"' in workflow
    # compiled with the digests, published with them
    assert ". ./images.env" in workflow and "imagelingo compile" in workflow
    # one pipeline file per target of the support matrix
    assert (
        "gh release upload" in workflow
        and "pipelines/imagelingo_pipeline.*.yaml images.env" in (workflow)
    )
    retrain = (REPO_ROOT / ".github" / "workflows" / "retrain.yml").read_text()
    assert "images.env" in retrain and ". ./images.env" in retrain


def requirements(target: str) -> list[str]:
    path = REPO_ROOT / "components" / "requirements" / f"{target}.txt"
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_each_image_installs_its_one_list_with_the_lock_and_the_package_without_deps():
    text = (REPO_ROOT / "components" / "Dockerfile").read_text()
    assert "COPY components/requirements ./components/requirements" in text
    for target in IMAGES:
        stage = text.split(f" AS {target}\n")[1].split("\nFROM ")[0]
        listed = target.removesuffix("-cuda")  # the CUDA image installs the training list
        assert f"-r components/requirements/{listed}.txt" in stage, target
        assert "-c constraints.txt" in stage and "pip install --no-deps ." in stage, target
    # the CPU wheel from PyTorch's index; the CUDA build from PyPI, its NVIDIA wheels locked too
    assert "download.pytorch.org/whl/cpu" in text.split(" AS training\n")[1].split("FROM ")[0]
    assert "download.pytorch.org" not in text.split(" AS training-cuda\n")[1].split("FROM ")[0]
    locked = {
        line.split("==")[0].lower()
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for target in ("training", "deploy"):
        names = requirements(target)
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names), names  # no pins here
        assert {n.lower() for n in names} <= locked, target
    assert {"nvidia-cuda-runtime", "nvidia-cudnn-cu13", "triton"} <= locked  # torch's CUDA deps
    # the deploy step moves the registry alias: mlflow is in its image (issue 10, point 1)
    assert "mlflow" in requirements("deploy")
