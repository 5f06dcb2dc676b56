"""What a profile namespace's `mlpipeline-minio-artifact` keys may do on the box's object store.

1. Runs the release's own pipelines-profile-controller `sync.py` (the copy under
   shared/cluster-reference, byte-identical to the ConfigMap in the rendered install) as its
   Deployment runs it (env from the rendered install), and POSTs it the sync request
   metacontroller's DecoratorController sends for a profile namespace. On 1.11 that code calls the
   SeaweedFS IAM API (CreateAccessKey, PutUserPolicy; sync.py:348-377); on 1.10 it copies the
   shared MinIO root key (sync.py:363-375). The Secret it returns holds the namespace's keys.
2. With those keys, boto3 calls (what deploy.py's check_bucket and upload send, and a few outside
   the policy), imagelingo's own check_bucket/upload_dir, and KServe 0.15.2's storage-initializer
   download (`kserve.storage.Storage.download`, run in .venv-storage if it is there).
Usage: python check.py kubeflow-1.11|kubeflow-1.10 [--s3 URL] [--iam URL] [--out FILE]
tests/box/test_objectstore.py imports this file by path and calls run_sync, client, with_env.
"""

import argparse
import base64
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REF = REPO.parent / "shared/cluster-reference/kubeflow-manifests"
SYNC = "applications/pipeline/upstream/base/installs/multi-user/"
SYNC += "pipelines-profile-controller/sync.py"
NS, OTHER, BUCKET = "kubeflow-user-example-com", "other-profile", "mlpipeline"
ADMIN = ("minio", "minio123")  # Secret kubeflow/mlpipeline-minio-artifact, both releases
RELEASES = {"kubeflow-1.11": "v1.11.0", "kubeflow-1.10": "v1.10.2"}
# Labels the profile controller sets (applications/profiles/pss/namespace-labels.yaml:18-23)
LABELS = {
    "katib.kubeflow.org/metrics-collector-injection": "enabled",
    "serving.kubeflow.org/inferenceservice": "enabled",
    "pipelines.kubeflow.org/enabled": "true",
    "app.kubernetes.io/part-of": "kubeflow-profile",
    "pod-security.kubernetes.io/enforce": "baseline",
}
# The DecoratorController's attachments (v1.11.0 rendered install :170661-170706)
KINDS = [
    "Secret.v1",
    "ConfigMap.v1",
    "Deployment.apps/v1",
    "Service.v1",
    "DestinationRule.networking.istio.io/v1alpha3",
    "AuthorizationPolicy.security.istio.io/v1beta1",
]
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
PROBE_KEY = ".imagelingo-deploy-check"  # a key that is not there; check_bucket reads one so named


def sync_env(release: str, s3_url: str, iam_url: str) -> dict:
    """The env sync.py's Deployment gives it (1.11 deployment.yaml:31-69, 1.10 :29-50)."""
    return {
        "KFP_VERSION": "2.15.0" if release == "v1.11.0" else "2.5.0",  # pipeline-install-config
        "DISABLE_ISTIO_SIDECAR": "false",
        "ARTIFACTS_PROXY_ENABLED": "false",
        "ARTIFACT_RETENTION_DAYS": "-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": iam_url,  # 1.11 deployment.yaml:37-40
        "S3_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": ADMIN[0],
        "AWS_SECRET_ACCESS_KEY": ADMIN[1],
        "MINIO_ACCESS_KEY": ADMIN[0],  # 1.10 deployment.yaml:41-50
        "MINIO_SECRET_KEY": ADMIN[1],
    }


@contextlib.contextmanager
def environ(values: dict):
    """os.environ with `values` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_sync(release: str, s3_url: str, iam_url: str, namespace: str) -> dict:
    """sync.py's server, env as its Deployment sets it; returns the Secret's decoded data."""
    with environ(sync_env(release, s3_url, iam_url)):
        spec = importlib.util.spec_from_file_location(f"sync_{release}", REF / release / SYNC)
        sync = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sync)  # 1.11: creates its iam/s3 botocore clients from this env
        settings = sync.get_settings_from_env()
        settings.update(url="127.0.0.1", controller_port=0)
        server = sync.server_factory(**settings)
    threading.Thread(target=server.handle_request, daemon=True).start()
    meta = {"name": namespace, "labels": LABELS}
    parent = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
    attachments = {k: {} for k in KINDS}
    request = {"controller": {}, "object": parent, "attachments": attachments, "finalizing": False}
    url = f"http://127.0.0.1:{server.server_address[1]}/sync"
    post = urllib.request.Request(
        url, json.dumps(request).encode(), {"Content-Type": "application/json"}
    )
    # it prints the request and the resources it returns
    with contextlib.redirect_stdout(io.StringIO()) as said, urllib.request.urlopen(post) as r:
        desired = json.load(r)
    for line in said.getvalue().splitlines():
        if line.strip() and line[:2] not in (" {", " ["):
            print(f"   sync.py[{namespace}]: {line}")
    server.server_close()
    secret = next(a for a in desired["attachments"] if a["kind"] == "Secret")
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def client(s3_url, key, secret):
    return boto3.client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def with_env(keys, fn):
    """fn run with the keys in the environment: imagelingo's code reads its credentials there,
    as the KFP task does."""

    def run():
        boto3.DEFAULT_SESSION = None  # boto3.client()'s session keeps the keys it first read
        with environ(dict(zip(AWS_ENV, (*keys, "us-east-1"), strict=True))):
            return fn()

    return run


def outcome(fn):
    try:
        fn()
        return {"result": "allowed"}
    except ClientError as exc:
        e, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        return {
            "result": {403: "denied", 404: "allowed-404"}.get(status, "error"),
            "http": status,
            "code": e.get("Code"),
            "message": e.get("Message"),
        }
    except Exception as exc:  # imagelingo's errors, or kserve's
        return {"result": "error", "exception": type(exc).__name__, "message": str(exc)}


DOWNLOAD = """import sys, os
from kserve.storage import Storage
d = Storage.download(sys.argv[1], sys.argv[2])
print(sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs))
"""


def storage_initializer(s3_url, keys, uri):
    """kserve 0.15.2's Storage.download with the env KServe gives the storage-initializer."""
    py = REPO / ".venv-storage/bin/python"
    if not py.exists():
        raise RuntimeError(f"{py} missing (serving/kfs-runtime/storage-requirements.txt)")
    env = dict(os.environ, S3_USE_HTTPS="0", S3_ENDPOINT=s3_url.split("://")[1])
    env.update(zip(AWS_ENV, (*keys, "us-east-1"), strict=True), AWS_ENDPOINT_URL=s3_url)
    with tempfile.TemporaryDirectory() as out:
        cmd = [str(py), "-c", DOWNLOAD, uri, out]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if p.returncode:
            raise RuntimeError(p.stderr.strip().splitlines()[-1])
        return p.stdout.strip()


def model_store() -> Path:
    store = Path(tempfile.mkdtemp())
    (store / "config").mkdir()
    (store / "config/config.properties").write_text("inference_address=http://0.0.0.0:8085\n")
    (store / "model-store").mkdir()
    (store / "model-store/imagelingo.mar").write_bytes(os.urandom(1024))
    return store


def checks(s3: str, keys: tuple, admin, store: Path) -> list:
    """(name, call) for each row; `keys` are the namespace's."""
    from imagelingo.deploy import check_bucket
    from imagelingo.storage import upload_dir

    ns = client(s3, *keys)
    mine = f"private/{NS}/imagelingo/model-store/v1"
    probe = f"{mine}/{PROBE_KEY}"  # what check_bucket reads since issue 26

    def put(key):
        return lambda: ns.put_object(Bucket=BUCKET, Key=key, Body=b"a")

    def get(key, bucket=BUCKET, who=ns):
        return lambda: who.get_object(Bucket=bucket, Key=key)["Body"].read()

    def head(key, bucket=BUCKET):
        return lambda: ns.head_object(Bucket=bucket, Key=key)

    def list2(prefix=None):
        return lambda: ns.list_objects_v2(Bucket=BUCKET, **({"Prefix": prefix} if prefix else {}))

    def check(uri, who=keys):
        return with_env(who, lambda: check_bucket(uri, s3))

    def download(uri):
        return lambda: print("   downloaded:", storage_initializer(s3, keys, uri))

    ours = f"s3://{BUCKET}/{mine}"
    kserve = "storage-initializer (kserve 0.15.2)"
    return [
        ("PutObject private/<ns>/imagelingo/...", put(f"{mine}/a.txt")),
        ("GetObject private/<ns>/imagelingo/...", get(f"{mine}/a.txt")),
        ("HeadObject private/<ns>/imagelingo/...", head(f"{mine}/a.txt")),
        ("ListObjectsV2 prefix private/<ns>/imagelingo/", list2(f"private/{NS}/imagelingo/")),
        (
            "ListObjects(v1) prefix private/<ns>/imagelingo/model-store/v1",
            lambda: ns.list_objects(Bucket=BUCKET, Prefix=mine),
        ),
        (
            "upload_dir (imagelingo.storage) -> s3://mlpipeline/private/<ns>/...",
            with_env(keys, lambda: upload_dir(store, ours, s3)),
        ),
        ("PutObject shared/...", put("shared/imagelingo/a.txt")),
        ("PutObject artifacts/...", put("artifacts/imagelingo/a.txt")),
        ("PutObject private-artifacts/<ns>/...", put(f"private-artifacts/{NS}/a.txt")),
        (
            "DeleteObject private/<ns>/.../a.txt",
            lambda: ns.delete_object(Bucket=BUCKET, Key=f"{mine}/a.txt"),
        ),
        (
            "HeadBucket mlpipeline (what check_bucket sent before issue 26)",
            lambda: ns.head_bucket(Bucket=BUCKET),
        ),
        ("check_bucket (imagelingo.deploy) s3://mlpipeline/private/<ns>/...", check(ours)),
        (
            "PutObject imagelingo/... (the README's s3://mlpipeline/imagelingo)",
            put("imagelingo/model-store/a.txt"),
        ),
        ("GetObject imagelingo/by-admin.txt", get("imagelingo/by-admin.txt")),
        ("PutObject private/<other-ns>/...", put(f"private/{OTHER}/a.txt")),
        ("GetObject private/<other-ns>/secret.txt", get(f"private/{OTHER}/secret.txt")),
        ("ListObjectsV2 no prefix", list2()),
        ("ListObjectsV2 prefix private/<ns> (no slash)", list2(f"private/{NS}")),
        ("ListObjectsV2 prefix private/", list2("private/")),
        ("HeadObject missing key under private/<ns>/ (404 = allowed)", head(probe)),
        ("HeadObject missing key under imagelingo/", head(f"imagelingo/{PROBE_KEY}")),
        # what check_bucket sends since issue 26: GetObject of a key that is not there
        ("GetObject missing key under private/<ns>/ (NoSuchKey = allowed)", get(probe)),
        ("GetObject missing key under imagelingo/", get(f"imagelingo/{PROBE_KEY}")),
        ("HeadObject missing key, missing bucket", head(PROBE_KEY, "no-such-bucket")),
        ("GetObject missing key, missing bucket", get(PROBE_KEY, "no-such-bucket")),
        (
            "GetObject missing key, missing bucket, admin key",
            get(PROBE_KEY, "no-such-bucket", admin),
        ),
        (
            "check_bucket s3://mlpipeline/imagelingo/model-store/v1 (README before issue 26)",
            check(f"s3://{BUCKET}/imagelingo/model-store/v1"),
        ),
        ("check_bucket s3://no-such-bucket/x", check("s3://no-such-bucket/x")),
        ("check_bucket s3://no-such-bucket/x, admin key", check("s3://no-such-bucket/x", ADMIN)),
        ("ListBuckets", lambda: ns.list_buckets()),
        ("CreateBucket imagelingo", lambda: ns.create_bucket(Bucket="imagelingo")),
        ("GetBucketLocation mlpipeline", lambda: ns.get_bucket_location(Bucket=BUCKET)),
        (f"{kserve} s3://mlpipeline/private/<ns>/imagelingo/model-store/v1", download(ours)),
        (f"{kserve} s3://mlpipeline/imagelingo", download(f"s3://{BUCKET}/imagelingo")),
        (
            "HeadBucket mlpipeline with the admin key minio/minio123",
            lambda: admin.head_bucket(Bucket=BUCKET),
        ),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target", choices=list(RELEASES))
    ap.add_argument("--s3", default="http://127.0.0.1:8333")
    ap.add_argument("--iam", default="http://127.0.0.1:8111")
    ap.add_argument("--out")
    a = ap.parse_args()
    release = RELEASES[a.target]
    sys.path.insert(0, str(REPO / "src"))

    admin = client(a.s3, *ADMIN)
    if release == "v1.10.2":  # KFP's API server makes the bucket; on 1.11 SeaweedFS's postStart
        outcome(lambda: admin.create_bucket(Bucket=BUCKET))
    keys = run_sync(release, a.s3, a.iam, NS)
    keys = (keys["accesskey"], keys["secretkey"])
    other = run_sync(release, a.s3, a.iam, OTHER)
    admin.put_object(Bucket=BUCKET, Key=f"private/{OTHER}/secret.txt", Body=b"x")
    admin.put_object(Bucket=BUCKET, Key="imagelingo/by-admin.txt", Body=b"x")
    sync_keys = {
        "accesskey": keys[0],
        "secretkey_len": len(keys[1]),
        "other_ns_accesskey": other["accesskey"],
    }
    results = {"target": a.target, "namespace": NS, "keys_from_sync_py": sync_keys, "checks": []}
    print(f"{a.target}: {NS} got accesskey {keys[0]!r} from {release} sync.py", end=" ")
    print(f"({other['accesskey']!r} for {OTHER})")
    for name, fn in checks(a.s3, keys, admin, model_store()):
        r = {"check": name, **outcome(fn)}
        results["checks"].append(r)
        said = ("http", "code", "message", "exception")
        print(f"  {r['result']:8} {name}" + "".join(f"  {k}={r[k]!r}" for k in said if r.get(k)))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
