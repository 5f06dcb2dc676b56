"""Our Standard-mode NetworkPolicy enforced by a real enforcer on the box (box/NOTES-netpol.md):
sigs.k8s.io/kube-network-policies v0.8.0 built from source (box/netpol/), run as its upstream
DaemonSet on the box's real kubelet node (box/kubelet/up.sh), in front of a pod labelled as KServe
v0.15.2 labels the predictor and its Service, called from a Kubeflow profile namespace, from
istio-system and from the predictor's own namespace (box/netpol/demo.sh).

Each verdict of the real enforcer must equal what tests/netpol.py (our evaluator, the stand-in
tests/test_networkpolicies.py uses) says for the same objects. Issue 26 defect 3 (a KFP task in a
profile namespace cannot call the Standard Service) is the test of the team-a caller: the policy
in manifests/components/standard-mode admitted istio-system only; it now admits profiles too.

Skipped unless IMAGELINGO_BOX=1, the binaries are built (box/build.sh k8s-v1.34 coredns-v1.12;
box/netpol/build.sh), it runs as root, and the kernel can run the enforcer: it queues packets with
nftables' `queue` statement, which needs CONFIG_NFT_QUEUE. The project's Firecracker kernel
(6.18.44, no modules) has none: every rule with `queue` is refused with ENOENT, so the enforcer runs
but installs nothing and enforces nothing (box/NOTES-netpol.md has the exact log).
IMAGELINGO_NETPOL_NO_PROBE=1 runs on past that check, to see it fail on such a kernel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from netpol import Pod, admitted

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BOX = REPO / "box"
BIN = BOX / "bin" / "v1.34.4"
ENFORCER = BOX / "netpol" / "bin" / "kube-network-policies"
OVERLAY = REPO / "manifests" / "overlays" / "minio-standard"
PROFILE_LABELS = {  # kubeflow/manifests v1.11.0 applications/profiles/pss/namespace-labels.yaml
    "katib.kubeflow.org/metrics-collector-injection": "enabled",
    "serving.kubeflow.org/inferenceservice": "enabled",
    "pipelines.kubeflow.org/enabled": "true",
    "app.kubernetes.io/part-of": "kubeflow-profile",
    "pod-security.kubernetes.io/enforce": "baseline",
}
PREDICTOR_LABELS = {  # box/kserve/observed/v0.15.2-minio-standard-pod.yaml
    "app": "isvc.imagelingo-predictor",
    "app.kubernetes.io/managed-by": "imagelingo-deploy",
    "app.kubernetes.io/part-of": "imagelingo",
    "component": "predictor",
    "serving.kserve.io/inferenceservice": "imagelingo",
}
NFT_PROBE = """table inet imagelingo-nftqueue-probe {
  chain probe { type filter hook forward priority 0; policy accept;
    ip saddr 203.0.113.77 queue num 98 bypass
  }
}
"""


def nft_queue_missing() -> str:
    """Why the kernel cannot take the enforcer's `queue` rules ("" if it can)."""
    probe = subprocess.run(["nft", "-f", "-"], input=NFT_PROBE, capture_output=True, text=True)
    subprocess.run(
        ["nft", "delete", "table", "inet", "imagelingo-nftqueue-probe"], capture_output=True
    )
    if probe.returncode != 0:
        return (
            "this kernel refuses nftables' `queue` statement (CONFIG_NFT_QUEUE), which "
            "kube-network-policies needs for every rule: " + probe.stderr.strip().splitlines()[0]
        )
    return ""


def missing() -> str:
    if os.environ.get("IMAGELINGO_BOX") != "1":
        return "starts a kubelet node and the enforcer (minutes): set IMAGELINGO_BOX=1 to run it"
    needed = [BIN / b for b in ("etcd", "kube", "kubelet", "kube-proxy", "kubectl", "coredns")]
    absent = [str(p) for p in [*needed, ENFORCER] if not p.exists()]
    if absent:
        return f"not built: {', '.join(absent)} (box/NOTES-kubelet.md, box/NOTES-netpol.md)"
    if os.geteuid() != 0:
        return "the kubelet node needs root"
    if not shutil.which("nft") or not shutil.which("containerd"):
        return "needs nft and containerd (box/NOTES-kubelet.md: apt packages)"
    if os.environ.get("IMAGELINGO_NETPOL_NO_PROBE") == "1":  # run on, to see the enforcer fail
        return ""
    return nft_queue_missing()


def run(*cmd, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nice", "-n", "19", *map(str, cmd)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """{caller namespace: "ALLOWED" | "BLOCKED"} from demo.sh with the enforcer running."""
    if why := missing():
        pytest.skip(why)
    images, work = tmp_path_factory.mktemp("netpol-img"), tmp_path_factory.mktemp("node") / "w"
    built = run(BOX / "netpol/image.sh", ENFORCER.parent, images)
    assert built.returncode == 0, built.stderr
    cidr = os.environ.get("CLUSTER_CIDR", "10.247.0.0/16")
    try:
        up = run(BOX / "kubelet/up.sh", BIN, work, BOX_IMAGE_DIRS=str(images), CLUSTER_CIDR=cidr)
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        enforcer = run(BOX / "netpol/enforcer.sh", work, timeout=200)
        assert enforcer.returncode == 0, (enforcer.stdout + enforcer.stderr)[-3000:]
        demo = run(BOX / "netpol/demo.sh", work, OVERLAY, timeout=300)
        assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
        table = run("nft", "list", "table", "inet", "kube-network-policies")
        assert table.returncode == 0, "the enforcer installed no nftables table: " + table.stderr
        found = dict(re.findall(r"^caller in (\S+) .*: (ALLOWED|BLOCKED)", demo.stdout, re.M))
        assert len(found) == 3, demo.stdout
        yield found
    finally:
        if (work / "pids").exists():
            run(BOX / "kubelet/down.sh", work)


def evaluator_says(namespace: str) -> str:
    rendered = run(BIN / "kubectl", "kustomize", OVERLAY)
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    (ns,) = [d for d in documents if d["kind"] == "Namespace"]
    labels = {"team-a": PROFILE_LABELS, "istio-system": {}, "imagelingo": ns["metadata"]["labels"]}
    source = Pod(namespace, {"app": "caller"}, labels[namespace])
    target = Pod("imagelingo", PREDICTOR_LABELS, ns["metadata"]["labels"])
    return "ALLOWED" if admitted(policies, source, target, 8080) else "BLOCKED"


@pytest.mark.parametrize("namespace", ["team-a", "istio-system", "imagelingo"])
def test_the_enforcer_agrees_with_our_evaluator(verdicts, namespace):
    assert verdicts[namespace] == evaluator_says(namespace)


def test_the_gateway_reaches_the_predictor(verdicts):
    assert verdicts["istio-system"] == "ALLOWED"


def test_a_kfp_task_in_a_profile_namespace_reaches_the_predictor(verdicts):
    assert verdicts["team-a"] == "ALLOWED"
