"""The deploy step at its boundary: the InferenceService it renders, the "local" target, the
checks that need no cluster (the bucket on a real S3 API, moto on 127.0.0.1), and `imagelingo
deploy` for people: one line, exit 2, nothing half-applied. What needs a cluster (the checks of
namespace, Secret and runtime, the rollout steps, the command line against a cluster) runs against
the real API server and KServe: tests/box/test_deploy_on_kserve.py."""

from __future__ import annotations

import json
import urllib.request

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from imagelingo.cli import main
from imagelingo.deploy import (
    DeployConfig,
    KServe,
    KubeApi,
    check_bucket,
    deploy,
    inference_service,
    store_version,
)
from imagelingo.errors import ImageLingoError
from imagelingo.serving.torchserve import free_port


@pytest.fixture
def store(tmp_path):
    """A stand-in model store with the layout `imagelingo package` writes."""
    root = tmp_path / "store"
    (root / "model-store").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "model-store" / "imagelingo.mar").write_bytes(b"mar")
    (root / "config" / "direct.properties").write_text("model_store=/mnt/models/model-store\n")
    (root / "config" / "entrypoint.py").write_text("# the runtime's PID 1\n")
    return root


def test_inference_service_runs_our_runtime_with_resources_scaling_and_lockdown():
    manifest = inference_service(DeployConfig(protocol_version="v2"), "s3://models/imagelingo/1")
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    # no release given (no cluster to ask): the name every KServe from 0.15 on knows
    assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    predictor = manifest["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "pytorch"}
    assert model["runtime"] == "imagelingo-torchserve"
    assert "name" not in model  # KServe rejects a model.name (inference_service_validation.go:291)
    assert model["storageUri"] == "s3://models/imagelingo/1"
    assert model["protocolVersion"] == "v2"
    assert model["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 8)
    assert predictor["serviceAccountName"] == "imagelingo-deployer"
    assert model["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # Knative rejects every pod-level securityContext field by default (deploy.POD_SECURITY)
    assert "securityContext" not in predictor
    assert "canaryTrafficPercent" not in predictor


@pytest.mark.parametrize(
    ("kserve", "knative", "standard"),
    [
        ("0.15", "Serverless", "RawDeployment"),  # constants.go:421-427 at v0.15.2
        ("0.15.0", "Serverless", "RawDeployment"),
        (None, "Serverless", "RawDeployment"),  # none given: what every release knows
        ("0.20.0", "Knative", "Standard"),  # v0.20.0 constants.go:562-567
    ],
)
def test_each_kserve_release_gets_the_mode_names_it_knows(kserve, knative, standard):
    """issue 22 (8): KServe 0.15 runs an unknown deploymentMode as its default (Serverless on
    Kubeflow), so `Standard` would silently run as Knative on Kubeflow 1.11."""
    for mode, value in (("Knative", knative), ("Standard", standard)):
        release = kserve and KServe.parse(kserve)
        manifest = inference_service(DeployConfig(mode=mode), "s3://m/p/1", "1", release)
        assert manifest["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == value


def test_an_unknown_kserve_release_is_named(store, tmp_path):
    with pytest.raises(ImageLingoError, match="kserve_version '0.14'"):
        deploy(store, tmp_path / "d", "local", kserve_version="0.14")
    assert not (tmp_path / "d").exists()


def test_standard_mode_scales_on_cpu_with_an_hpa():
    config = DeployConfig(mode="Standard")
    manifest = inference_service(config, "s3://m/p/1", "1", KServe.parse("0.20"))
    annotations = manifest["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    predictor = manifest["spec"]["predictor"]
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", 80)
    assert predictor["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}


def test_local_target_copies_the_store_and_renders_yaml(store, tmp_path):
    record = deploy(store, tmp_path / "deploy", "local")
    assert record["action"] == "rendered"
    rendered = yaml.safe_load((tmp_path / "deploy" / "inferenceservice.yaml").read_text())
    storage = rendered["spec"]["predictor"]["model"]["storageUri"]
    assert (tmp_path / "deploy" / "store" / "model-store" / "imagelingo.mar").read_bytes() == b"mar"
    assert storage == str(tmp_path / "deploy" / "store")


def test_a_store_without_the_runtimes_entrypoint_is_refused_before_anything(store, tmp_path):
    """imagelingo-torchserve's PID 1 is the store's config/entrypoint.py: a store packaged
    before it would crash-loop on the cluster."""
    (store / "config" / "entrypoint.py").unlink()
    with pytest.raises(ImageLingoError, match="entrypoint.py not found.*imagelingo package"):
        deploy(store, tmp_path / "deploy", "local")
    assert not (tmp_path / "deploy").exists()
    stock = DeployConfig(runtime="kserve-torchserve")  # the stock runtime does not start it
    assert deploy(store, tmp_path / "stock", "local", stock)["action"] == "rendered"


def test_a_given_storage_uri_gets_one_folder_per_model_version(store, tmp_path):
    config = DeployConfig(storage_uri=str(tmp_path / "shared"))
    first = deploy(store, tmp_path / "d1", "local", config)
    (store / "model-store" / "imagelingo.mar").write_bytes(b"retrained")
    second = deploy(store, tmp_path / "d2", "local", config)
    uris = [r["params"]["storage_uri"] for r in (first, second)]
    assert uris[0] != uris[1] and all(u.startswith(str(tmp_path / "shared")) for u in uris)
    assert uris[1].endswith(store_version(store))
    assert (
        tmp_path / "shared" / first["store_version"] / "model-store" / "imagelingo.mar"
    ).is_file()


class Untouchable:
    def __getattr__(self, name):
        raise AssertionError(f"the cluster was touched: {name}")


@pytest.mark.parametrize("uri", ["", "/data/models", "runs/store", "pvc://models/imagelingo"])
def test_kserve_refuses_a_storage_uri_the_cluster_cannot_read_before_anything(store, tmp_path, uri):
    with pytest.raises(ImageLingoError, match="target kserve needs an s3://"):
        deploy(store, tmp_path / "d", "kserve", DeployConfig(storage_uri=uri), client=Untouchable())
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("target", "config", "message"),
    [
        ("cloud", DeployConfig(), "unknown deploy target"),
        ("local", DeployConfig(canary_traffic_percent=150), "canary_traffic_percent"),
        ("local", DeployConfig(protocol_version="v3"), "protocol_version"),
        ("local", DeployConfig(mode="Serverless"), "mode must be"),
        ("local", DeployConfig(runtime="kserve-sklearnserver"), "runtime must be"),
        ("local", DeployConfig(name="Image_Lingo"), "not a valid Kubernetes name"),
        ("local", DeployConfig(storage_uri="gs://bucket/x"), "gs://bucket/x"),
    ],
)
def test_bad_deploy_settings_are_named(store, tmp_path, target, config, message):
    with pytest.raises(ImageLingoError, match=message):
        deploy(store, tmp_path / "d", target, config)


PROFILE = "kubeflow-user-example-com"


def iam_user(iam, name: str, statement: dict) -> dict:
    iam.create_user(UserName=name)
    policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    names = ("aws_access_key_id", "aws_secret_access_key")
    return dict(zip(names, (key["AccessKeyId"], key["SecretAccessKey"]), strict=True))


@pytest.fixture
def profile_keys(s3_server, monkeypatch):
    """In the environment: keys with the IAM policy Kubeflow 1.11's sync.py gives a profile
    (kubeflow/manifests v1.11.0 pipelines-profile-controller/sync.py:356-377: Put*, Get*, List*
    on four prefixes of mlpipeline, nothing on the bucket itself); from then on moto checks every
    request (its /moto-api/reset-auth). Returns an S3 client with an admin's keys.
    tests/box/test_objectstore.py runs the same against SeaweedFS with sync.py itself."""
    where = {"endpoint_url": s3_server, "region_name": "us-east-1"}
    boto3.client("s3", **where).create_bucket(Bucket="mlpipeline")
    iam = boto3.client("iam", **where)
    admin = iam_user(iam, "admin", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    prefixes = ["artifacts", f"private-artifacts/{PROFILE}", f"private/{PROFILE}", "shared"]
    profile = {
        "Effect": "Allow",
        "Action": ["s3:Put*", "s3:Get*", "s3:List*"],
        "Resource": [f"arn:aws:s3:::mlpipeline/{prefix}/*" for prefix in prefixes],
    }
    keys = iam_user(iam, PROFILE, profile)
    auth = urllib.request.Request(
        f"{s3_server}/moto-api/reset-auth", b"0", {"Content-Type": "text/plain"}, method="POST"
    )
    urllib.request.urlopen(auth).close()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys["aws_secret_access_key"])
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps the first keys it read
    return boto3.client("s3", **where, **admin)


def test_check_bucket_needs_no_bucket_permission(profile_keys, s3_server):
    # issue 26 (1): a profile's keys may not HeadBucket, and deploy must not need it
    with pytest.raises(ClientError, match="403"):
        boto3.client("s3", endpoint_url=s3_server).head_bucket(Bucket="mlpipeline")
    check_bucket(f"s3://mlpipeline/private/{PROFILE}/imagelingo/model-store/1", s3_server)
    assert "Contents" not in profile_keys.list_objects_v2(Bucket="mlpipeline")


def test_check_bucket_names_a_denied_prefix_and_the_allowed_ones(profile_keys, s3_server):
    uri = "s3://mlpipeline/imagelingo/model-store/1"
    with pytest.raises(ImageLingoError) as denied:
        check_bucket(uri, s3_server)
    assert str(denied.value).startswith(f"{uri}: AccessDenied: ")
    assert "private-artifacts/<namespace>,private/<namespace>,shared}/..." in str(denied.value)
    assert str(denied.value).endswith("use s3://mlpipeline/private/<namespace>/...")


def test_check_bucket_names_a_missing_bucket(s3_server):
    with pytest.raises(ImageLingoError) as missing:
        check_bucket("s3://absent/x/1", s3_server)
    assert str(missing.value) == "S3 bucket 'absent' does not exist (s3://absent/x/1)"


# --- the command line ---------------------------------------------------------------------


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(["deploy", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_cli_refuses_a_local_uri_for_kserve_in_one_line(store, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    code, err = run_cli(
        capsys,
        store,
        "--target",
        "kserve",
        "--storage-uri",
        tmp_path / "x",
        "--out",
        tmp_path / "d",
    )
    assert code == 2
    assert err.count("\n") == 0 and "needs an s3://" in err and "a local path" in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "x").exists()


def test_cli_writes_for_the_kserve_release_given(store, tmp_path, capsys):
    out = tmp_path / "d"
    argv = (store, "--mode", "Standard", "--kserve-version", "0.20.0", "--out", out)
    code, err = run_cli(capsys, *argv)
    assert code == 0, err
    rendered = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert rendered["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert rendered["spec"]["predictor"]["name"] == f"model-{store_version(store)}"
    code, err = run_cli(capsys, store, "--kserve-version", "1.0", "--out", tmp_path / "e")
    assert code == 2 and "kserve_version '1.0'" in err


def kubeconfig(path, server: str):
    """A kubeconfig naming `server`, as `kubectl config` writes one."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return str(path)


def test_cli_names_an_unreachable_cluster(store, tmp_path, capsys, monkeypatch, bucket, uploaded):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("KUBECONFIG", kubeconfig(tmp_path / "kc", url))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, err = run_cli(capsys, store, "--target", "kserve", "--storage-uri", bucket)
    assert code == 2 and err.count("\n") == 0
    assert "unreachable" in err and url in err
    assert uploaded() == []


def test_cli_names_a_missing_kubeconfig(store, tmp_path, capsys, monkeypatch, bucket):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, err = run_cli(capsys, store, "--target", "kserve", "--storage-uri", bucket)
    assert code == 2 and err.count("\n") == 0 and "no Kubernetes cluster configured" in err


def test_kube_api_reads_what_the_kubeconfig_names(tmp_path, monkeypatch):
    url = "https://cluster.example:6443"
    monkeypatch.setenv("KUBECONFIG", kubeconfig(tmp_path / "kc", url))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert KubeApi().host == url
