"""The model store's side of deploy: the S3 Secret KServe's storage-initializer reads, whether
the object store admits the namespace and these credentials the prefix, and the upload to the
versioned prefix (or a local folder)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from imagelingo.cluster.isvc import DeployConfig
from imagelingo.errors import ImageLingoError

# The Secret keys KServe's storage-initializer reads: credentials.s3 of inferenceservice-config
# (kserve-runtimes/v0.15.2/config/configmap/inferenceservice.yaml:625-645; v0.20.0 the same).
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# Kubeflow's per-namespace pipeline Secret mlpipeline-minio-artifact names them otherwise
# (kubeflow-manifests/v1.11.0/.../pipelines-profile-controller/sync.py:347-377).
KUBEFLOW_S3_KEYS = ("accesskey", "secretkey")

# Where KServe finds the S3 endpoint: this annotation on the Secret, else the Secret's S3_ENDPOINT
# key, else inferenceservice-config (empty: AWS) (kserve-runtimes/v0.20.0/pkg/credentials/s3/
# s3_secret.go:62, utils.go:39).
S3_ENDPOINT_ANNOTATION = "serving.kserve.io/s3-endpoint"

# Kubeflow's object store admits only profile namespaces (this label), istio-system and kubeflow
# (kubeflow-manifests/v1.11.0/common/networkpolicies/base/minio.yaml; third-party/seaweedfs/base/
# seaweedfs/seaweedfs-networkpolicy.yaml:6-32; the label: applications/profiles/upstream/base/
# namespace-labels.yaml:18).
PROFILE_LABEL = ("app.kubernetes.io/part-of", "kubeflow-profile")


def check_s3_secret(secret: dict | None, config: DeployConfig) -> None:
    """The Secret carries what KServe's storage-initializer reads: the AWS_* keys, and where the
    store is (README FACT 10: annotation, else S3_ENDPOINT key, else AWS)."""
    ns, name = config.namespace, config.s3_secret
    if secret is None:
        raise ImageLingoError(
            f"Secret {name!r} not found in namespace {ns!r}: KServe cannot read "
            f"{config.storage_uri} (kubectl apply -k manifests/secrets/<overlay>, README)"
        )
    keys = secret["keys"]
    missing = [k for k in S3_KEYS if k not in keys]
    if missing and set(KUBEFLOW_S3_KEYS) <= keys:
        raise ImageLingoError(
            f"Secret {ns}/{name} has Kubeflow's pipeline keys {'/'.join(KUBEFLOW_S3_KEYS)}, "
            f"not the {'/'.join(S3_KEYS)} KServe's storage-initializer reads: make a KServe "
            f"Secret from them (README, 'On a cluster')"
        )
    if missing:
        raise ImageLingoError(f"Secret {ns}/{name} lacks (or has empty) {', '.join(missing)}")
    if S3_ENDPOINT_ANNOTATION not in secret["annotations"] and "S3_ENDPOINT" not in keys:
        raise ImageLingoError(
            f"Secret {ns}/{name} has no {S3_ENDPOINT_ANNOTATION} annotation: KServe's "
            f"storage-initializer would fetch from AWS, not your store (manifests/secrets/)"
        )


def check_object_store_reachable(endpoint: str, namespace: str, labels: dict | Any) -> None:
    """Kubeflow's object store (minio-service.kubeflow) admits only profile namespaces: the
    storage-initializer of a pod elsewhere cannot download and the pod stays in Init."""
    host = endpoint.split("://")[-1].split("/")[0].split(":")[0]
    if not re.fullmatch(r"[^.]+\.kubeflow(\.svc(\.cluster\.local)?)?", host):
        return
    if not isinstance(labels, dict):  # namespaces not readable: nothing to check with
        return
    key, value = PROFILE_LABEL
    if labels.get(key) != value:
        raise ImageLingoError(
            f"namespace {namespace!r} lacks the label {key}={value}: Kubeflow's NetworkPolicies "
            f"admit only profile namespaces to {host}, so KServe could not fetch the model "
            f"(deploy into your profile namespace, or apply manifests/overlays/minio)"
        )


def check_bucket(storage_uri: str, endpoint_url: str | None) -> None:
    """The credentials this process has may use storage_uri's prefix, where deploy writes and
    KServe's storage-initializer reads. Nothing bucket-level (issue 26): Kubeflow 1.11's
    per-profile keys are allowed object paths only (pipelines-profile-controller sync.py:347-377)
    and its SeaweedFS denies them HeadBucket. So it reads a key under the prefix that is not
    there: NoSuchKey = allowed, 403 = denied, NoSuchBucket = no bucket. GetObject, not
    HeadObject: a HEAD answer has no body, so its 404 does not say which (NOTES-objectstore.md)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from imagelingo.storage import s3_client, split_s3_uri

    bucket, prefix = split_s3_uri(storage_uri)
    probe = "/".join(filter(None, [prefix.rstrip("/"), ".imagelingo-deploy-check"]))
    try:
        s3_client(endpoint_url).get_object(Bucket=bucket, Key=probe)["Body"].close()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        if code == "NoSuchKey":
            return
        if code == "NoSuchBucket":
            raise ImageLingoError(f"S3 bucket {bucket!r} does not exist ({storage_uri})") from exc
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403:
            allowed = "{artifacts,private-artifacts/<namespace>,private/<namespace>,shared}"
            raise ImageLingoError(
                f"{storage_uri}: {code}: these S3 credentials may not read or write there; "
                "Kubeflow 1.11's per-profile keys (mlpipeline-minio-artifact) allow only "
                f"s3://mlpipeline/{allowed}/...: use s3://mlpipeline/private/<namespace>/..."
            ) from exc
        raise ImageLingoError(f"{storage_uri}: S3 {code}: {error.get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise ImageLingoError(f"{storage_uri}: {exc}") from exc


def check_storage_uri(target: str, storage_uri: str) -> None:
    if target == "kserve" and not storage_uri.startswith("s3://"):
        what = "a local path" if "://" not in storage_uri else "not uploadable here"
        raise ImageLingoError(
            f"target kserve needs an s3://bucket/prefix storage_uri the cluster can read; "
            f"got {storage_uri or '(none)'!r} ({what})"
        )
    if target == "local" and "://" in storage_uri and not storage_uri.startswith("s3://"):
        raise ImageLingoError(f"cannot upload to {storage_uri!r}: use s3:// or a local path")


def upload_store(store_dir: Path, storage_uri: str, endpoint_url: str | None = None) -> int:
    """Copy model-store/ and config/ to the storage URI; returns the number of files."""
    store_dir = Path(store_dir)
    check_store(store_dir)
    if storage_uri.startswith("s3://"):
        from imagelingo.storage import upload_dir

        return sum(
            upload_dir(store_dir / part, f"{storage_uri.rstrip('/')}/{part}", endpoint_url)
            for part in ("model-store", "config")
        )
    if "://" in storage_uri:
        raise ImageLingoError(f"cannot upload to {storage_uri!r}: use s3:// or a local path")
    target = Path(storage_uri)
    count = 0
    for part in ("model-store", "config"):
        shutil.copytree(store_dir / part, target / part, dirs_exist_ok=True)
        count += sum(1 for p in (target / part).rglob("*") if p.is_file())
    return count


def check_store(store_dir: Path, runtime: str = "") -> None:
    for part in ("model-store", "config"):
        if not (Path(store_dir) / part).is_dir():
            raise ImageLingoError(f"{Path(store_dir) / part} not found: run `imagelingo package`")
    # imagelingo-torchserve's PID 1 and readiness probe are the store's config/entrypoint.py
    # (manifests/base/servingruntime.yaml): a store packaged before it would crash-loop
    entrypoint = Path(store_dir) / "config" / "entrypoint.py"
    if runtime == "imagelingo-torchserve" and not entrypoint.is_file():
        raise ImageLingoError(
            f"{entrypoint} not found: the imagelingo-torchserve runtime starts it; package the "
            "model again with this version (`imagelingo package`)"
        )
