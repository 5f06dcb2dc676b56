"""check_bucket against the object store Kubeflow 1.11 ships, with the keys its own code makes:
box/objectstore/bin/weed started as the release's Deployment starts it (start-seaweedfs.sh), and
the per-profile identity and IAM policy made by running the release's pipelines-profile-controller
sync.py (box/objectstore/check.py's run_sync). Issue 26 (1): a profile's keys may not HeadBucket,
so deploy refused every storage URI; they may use only mlpipeline/{artifacts,private-artifacts/<ns>,
private/<ns>,shared}/... (box/NOTES-objectstore.md)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from imagelingo.deploy import check_bucket
from imagelingo.errors import ImageLingoError

pytestmark = pytest.mark.slow  # starts SeaweedFS (master, volume, filer, S3 and IAM servers)

BOX = Path(__file__).resolve().parents[2] / "box/objectstore"
WEED = BOX / "bin/weed"
S3, IAM = "http://127.0.0.1:8333", "http://127.0.0.1:8111"
NS = "kubeflow-user-example-com"
# the Deployment's ports (start-seaweedfs.sh); the volume server's can move, the others not
PORTS = {"S3": 8333, "IAM": 8111, "master": 9333, "master gRPC": 19333, "filer": 8888}
PORTS |= {"filer gRPC": 18888}
VOLUME = (8080, 18080)


def load_check():
    spec = importlib.util.spec_from_file_location("objectstore_check", BOX / "check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    return check


def taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def check():
    if not WEED.is_file():
        pytest.skip(f"{WEED} absent: build it with box/objectstore/build.sh seaweedfs")
    check = load_check()
    sync = check.REF / "v1.11.0" / check.SYNC
    if not sync.is_file():
        pytest.skip(f"{sync} missing (../shared/cluster-reference: kubeflow/manifests v1.11.0)")
    return check


@pytest.fixture
def seaweedfs(check, tmp_path, monkeypatch):
    busy = [f"{name} {port}" for name, port in PORTS.items() if taken(port)]
    if busy:
        pytest.skip(f"SeaweedFS's fixed ports are in use on 127.0.0.1: {', '.join(busy)}")
    if any(taken(port) for port in VOLUME):  # e.g. a KServe manager's metrics on :8080
        wrapper = tmp_path / "weed"
        wrapper.write_text(
            "#!/bin/sh\n# bin/weed with the volume server on 8090/18090 (8080 is taken here)\n"
            f'case " $* " in *" server "*) exec "{WEED}" "$@" -volume.port=8090 ;; esac\n'
            f'exec "{WEED}" "$@"\n'
        )
        wrapper.chmod(0o755)
        monkeypatch.setenv("WEED_BIN", str(wrapper))
    data = tmp_path / "seaweedfs"
    start = subprocess.run(
        [str(BOX / "start-seaweedfs.sh"), str(data)], capture_output=True, text=True, timeout=300
    )
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        yield
    finally:
        subprocess.run([str(BOX / "stop.sh"), str(data)], capture_output=True, timeout=60)


@pytest.fixture
def profile_keys(check, seaweedfs, monkeypatch):
    """The profile's mlpipeline-minio-artifact keys, as Kubeflow 1.11's sync.py makes them."""
    secret = check.run_sync("v1.11.0", S3, IAM, NS)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", secret["accesskey"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret["secretkey"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the first keys it read
    return check.client(S3, secret["accesskey"], secret["secretkey"])


def test_check_bucket_passes_for_the_profiles_prefix_and_names_a_denied_one(profile_keys):
    with pytest.raises(ClientError, match="403"):  # what check_bucket sent before issue 26
        profile_keys.head_bucket(Bucket="mlpipeline")
    check_bucket(f"s3://mlpipeline/private/{NS}/imagelingo/model-store/1", S3)

    uri = "s3://mlpipeline/imagelingo/model-store/1"  # the README's prefix before issue 26
    with pytest.raises(ImageLingoError) as denied:
        check_bucket(uri, S3)
    assert str(denied.value) == (
        f"{uri}: AccessDenied: these S3 credentials may not read or write there; Kubeflow 1.11's "
        "per-profile keys (mlpipeline-minio-artifact) allow only s3://mlpipeline/{artifacts,"
        "private-artifacts/<namespace>,private/<namespace>,shared}/...: use "
        "s3://mlpipeline/private/<namespace>/..."
    )
