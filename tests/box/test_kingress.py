"""The KIngress stand-in's routing, by its Go tests (box/knative/cmd/kingress/*_test.go): the
VirtualService KServe writes for an InferenceService in Knative mode carries its address and its
URL (through the ingress gateway) to the predictor's Route, each host on its own gateways only.
The e2e (test_e2e.py) calls both on the box; this runs in make box-check, without a node."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from box_cluster import BOX


def test_kingress_stand_in_routes_kserve_virtual_services():
    if os.environ.get("IMAGELINGO_BOX") != "1":
        pytest.skip("builds the stand-in's tests (minutes cold): set IMAGELINGO_BOX=1")
    if not shutil.which("go"):
        pytest.skip("needs Go (1.26.8 here)")
    # the settings knative/build.sh builds with (-trimpath too), so the test shares its build cache
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    env["GOFLAGS"] = f"-p={os.environ.get('BOX_GO_P', '1')}"
    result = subprocess.run(
        ["go", "test", "-trimpath", "-count=1", "-v", "./cmd/kingress"],
        cwd=BOX / "knative",
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    passed = result.stdout.count("--- PASS")
    assert passed >= 8, result.stdout  # 7 cases of the KServe VirtualService and its removal
    print(f"kingress: {passed} Go tests passed")
