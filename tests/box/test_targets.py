"""The box's scripts pin, per target, the versions the support matrix names
(src/imagelingo/cluster/platforms.py, through box_cluster.TARGETS): a release's KServe and tag in
build-target.sh, up.sh and kserve/start-kserve.sh, and the Kubernetes it is checked on. Runs in
make test (reads the scripts; starts nothing)."""

from __future__ import annotations

import re

import pytest
from box_cluster import BOX, TARGETS


def case_line(script: str, target: str) -> str:
    """The `target)` line of the script's `case $target in`."""
    text = (BOX / script).read_text()
    found = re.search(rf"^{re.escape(target)}\)(.*)$", text, re.M)
    assert found, f"box/{script}: no case for {target}"
    return found.group(1)


@pytest.mark.parametrize("name", [n for n, t in TARGETS.items() if t.release])
def test_scripts_pin_the_matrix_versions(name):
    target = TARGETS[name]
    minor = target.kubernetes.rsplit(".", 1)[0]  # v1.34.4 -> k8s-v1.34, the module built
    assert f"kserve={target.kserve}" in case_line("build-target.sh", name)
    assert f"k8s-{minor} " in case_line("build-target.sh", name)
    assert f"k8s.io/kubernetes {target.kubernetes}\n" in (BOX / f"k8s-{minor}/go.mod").read_text()
    up = case_line("up.sh", name)
    for pin in (f"kbin={target.kubernetes}", f"kv={target.kserve}", f"release={target.release}"):
        assert pin in up, f"box/up.sh {name}: {pin} not in {up!r}"
    start = case_line("kserve/start-kserve.sh", name)
    for pin in (f"kv={target.kserve}", f"kbin={target.kubernetes}", f"src=({target.release})"):
        assert pin in start, f"box/kserve/start-kserve.sh {name}: {pin} not in {start!r}"


def test_the_kserve_control_plane_target_pins_the_newest_kserve():
    start = (BOX / "kserve/start-kserve.sh").read_text()
    assert f"kv={TARGETS['kserve-0.20'].kserve} " in start
