"""cert-manager in the box (box/certmanager/): the version built is the one each Kubeflow release
installs, and the three binaries take exactly the arguments the release's Deployments pass.

The first test reads the release and the module (make test). The second runs the binaries built
by box/certmanager/build.sh (make box-check): each must get past its flags with the release's
arguments and stop only at the kubeconfig given (absent here), so a flag the release passes that
the box's mains do not wire fails here, not as a crash-looping Pod on the node."""

from __future__ import annotations

import os
import subprocess

import pytest
from box_cluster import BOX, TARGETS, cert_manager_version, release_objects

RELEASES = sorted({t.release for t in TARGETS.values() if t.release})
COMMANDS = {  # the release's Deployment -> the binary built for it (images.sh)
    "cert-manager": "controller",
    "cert-manager-cainjector": "cainjector",
    "cert-manager-webhook": "webhook",
}


def deployments(release: str) -> dict[str, dict]:
    objs = release_objects(
        release, "--kind", "Deployment", "--label", "app.kubernetes.io/instance=cert-manager"
    )
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0] for d in objs}


@pytest.mark.parametrize("release", RELEASES)
def test_the_version_built_is_the_releases(release):
    containers = deployments(release)
    assert sorted(containers) == sorted(COMMANDS), f"{release}: {sorted(containers)}"
    for name, c in containers.items():
        image = f"quay.io/jetstack/cert-manager-{COMMANDS[name]}:{cert_manager_version()}"
        assert c["image"] == image, f"{release} Deployment {name}: {c['image']}, box builds {image}"


def binary(command: str):
    path = BOX / f"bin/cert-manager-{cert_manager_version()}/{command}"
    if os.environ.get("IMAGELINGO_BOX") != "1":
        pytest.skip("runs the box's binaries: set IMAGELINGO_BOX=1 (make box-check)")
    if not path.exists():
        pytest.skip(f"{path} absent: box/certmanager/build.sh")
    return path


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("deployment", sorted(COMMANDS))
def test_binaries_take_the_releases_arguments(release, deployment, tmp_path):
    path = binary(COMMANDS[deployment])
    args = [
        a.replace("$(POD_NAMESPACE)", "cert-manager")
        for a in deployments(release)[deployment]["args"]
    ]
    absent = tmp_path / "no-kubeconfig"
    run = subprocess.run(
        [path, *args, f"--kubeconfig={absent}"], capture_output=True, text=True, timeout=60
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert f"version={cert_manager_version()}" in out
    assert str(absent) in out, f"{deployment} stopped before reading its kubeconfig:\n{out}"
    assert "unknown flag" not in out


@pytest.mark.parametrize("command", sorted(COMMANDS.values()))
def test_a_flag_not_wired_is_refused(command):
    run = subprocess.run(
        [binary(command), "--no-such-flag"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert "unknown flag: --no-such-flag" in run.stderr
