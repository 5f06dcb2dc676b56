"""The box's scripts pin, per target, the versions the support matrix names
(src/imagelingo/cluster/platforms.py, through box_cluster.TARGETS): a release's KServe and tag in
build-target.sh, up.sh and kserve/start-kserve.sh, and the Kubernetes it is checked on. Runs in
make test (reads the scripts; starts nothing)."""

from __future__ import annotations

import re

import pytest
from box_cluster import BOX, TARGETS


def case_line(script: str, target: str) -> str:
    """The `target)` case of the script's `case $target in`, up to its `;;`."""
    text = (BOX / script).read_text()
    found = re.search(rf"^{re.escape(target)}\)(.*?);;", text, re.M | re.S)
    assert found, f"box/{script}: no case for {target}"
    return found.group(1)


@pytest.mark.parametrize("name", list(TARGETS))
def test_scripts_pin_the_matrix_versions(name):
    target = TARGETS[name]
    minor = target.kubernetes.rsplit(".", 1)[0]  # v1.34.4 -> k8s-v1.34, the module built
    assert f"kserve={target.kserve}" in case_line("build-target.sh", name)
    assert f"k8s-{minor} " in case_line("build-target.sh", name)
    assert f"k8s.io/kubernetes {target.kubernetes}\n" in (BOX / f"k8s-{minor}/go.mod").read_text()
    up = case_line("up.sh", name)
    release = target.release or '""'  # KServe's own install: no Kubeflow release
    for pin in (f"kbin={target.kubernetes}", f"kv={target.kserve}", f"release={release}"):
        assert pin in up, f"box/up.sh {name}: {pin} not in {up!r}"
    start = case_line("kserve/start-kserve.sh", name)
    pins = [f"kv={target.kserve}", f"kbin={target.kubernetes}"]
    pins += [f"src=({target.release})"] if target.release else []  # 0.20: from its module
    for pin in pins:
        assert pin in start, f"box/kserve/start-kserve.sh {name}: {pin} not in {start!r}"
