"""The component images: the Dockerfile lints clean, and the names the Makefile builds are the
names the compiled components declare."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from imagelingo.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from components.images import DEPLOY_IMAGE, TRAINING_IMAGE  # noqa: E402

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [HADOLINT, str(REPO_ROOT / "components" / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_images_run_as_a_non_root_numeric_user():
    text = (REPO_ROOT / "components" / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert len(users) == 2 and all(u.isdigit() and u != "0" for u in users)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text, flags=re.M)


def test_makefile_builds_the_images_the_components_declare():
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"IMAGE ?= {TRAINING_IMAGE}" in makefile
    assert f"DEPLOY_IMAGE ?= {DEPLOY_IMAGE}" in makefile
    assert "--target training -t $(IMAGE)" in makefile
    assert "--target deploy -t $(DEPLOY_IMAGE)" in makefile
