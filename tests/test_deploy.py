"""The deploy step at its boundary: the InferenceService it builds, the rendered YAML of the
"local" target, and idempotent create-then-patch through an injected KServe client."""

import pytest
import yaml
from kubernetes.client.rest import ApiException

from imagelingo.deploy import DeployConfig, deploy, inference_service, to_manifest
from imagelingo.errors import ImageLingoError


@pytest.fixture
def store(tmp_path):
    """A stand-in model store with the layout `imagelingo package` writes."""
    root = tmp_path / "store"
    (root / "model-store").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "model-store" / "imagelingo.mar").write_bytes(b"mar")
    (root / "config" / "config.properties").write_text("model_store=/mnt/models/model-store\n")
    return root


class FakeKServe:
    """Records calls like KServeClient; `get` raises 404 until something was created."""

    def __init__(self):
        self.objects, self.calls = {}, []

    def get(self, name, namespace=None):
        self.calls.append("get")
        if name not in self.objects:
            raise RuntimeError(f"Exception when calling get: (404)\nReason: Not Found {name}")
        return {"status": {"url": f"http://{name}.{namespace}.example.com"}}

    def create(self, isvc, namespace=None):
        self.calls.append("create")
        self.objects[isvc.metadata.name] = to_manifest(isvc)

    def patch(self, name, isvc, namespace=None):
        self.calls.append("patch")
        self.objects[name] = to_manifest(isvc)

    def wait_isvc_ready(self, name, namespace=None, timeout_seconds=600):
        self.calls.append("wait")


def test_inference_service_is_torchserve_with_storage_resources_and_canary():
    config = DeployConfig(canary_traffic_percent=20, protocol_version="v2")
    manifest = to_manifest(inference_service(config, "s3://models/imagelingo/1"))
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = manifest["spec"]["predictor"]
    assert predictor["model"]["modelFormat"] == {"name": "pytorch"}
    assert predictor["model"]["storageUri"] == "s3://models/imagelingo/1"
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    assert predictor["serviceAccountName"] == "imagelingo-deployer"
    assert predictor["canaryTrafficPercent"] == 20


def test_no_canary_leaves_the_field_out():
    manifest = to_manifest(inference_service(DeployConfig(), "s3://m/p"))
    assert "canaryTrafficPercent" not in manifest["spec"]["predictor"]


def test_local_target_copies_the_store_and_renders_yaml(store, tmp_path):
    record = deploy(store, tmp_path / "deploy", "local")
    assert record["action"] == "rendered"
    rendered = yaml.safe_load((tmp_path / "deploy" / "inferenceservice.yaml").read_text())
    storage = rendered["spec"]["predictor"]["model"]["storageUri"]
    assert (tmp_path / "deploy" / "store" / "model-store" / "imagelingo.mar").read_bytes() == b"mar"
    assert storage == str(tmp_path / "deploy" / "store")


def test_create_then_patch_is_idempotent(store, tmp_path):
    client = FakeKServe()
    config = DeployConfig(storage_uri=str(tmp_path / "bucket"))
    first = deploy(store, tmp_path / "d1", "kserve", config, client=client)
    second = deploy(store, tmp_path / "d2", "kserve", config, client=client)
    assert (first["action"], second["action"]) == ("created", "patched")
    assert client.calls.count("create") == 1 and client.calls.count("patch") == 1
    assert list(client.objects) == ["imagelingo"]
    assert first["url"] == "http://imagelingo.imagelingo.example.com"
    assert (tmp_path / "d1" / "inferenceservice.yaml").read_text() == (
        tmp_path / "d2" / "inferenceservice.yaml"
    ).read_text()


def test_other_api_errors_are_not_mistaken_for_absence(store, tmp_path):
    class Forbidden(FakeKServe):
        def get(self, name, namespace=None):
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        deploy(
            store,
            tmp_path / "d",
            "kserve",
            DeployConfig(storage_uri=str(tmp_path / "b")),
            client=Forbidden(),
        )


@pytest.mark.parametrize(
    ("target", "config", "message"),
    [
        ("cloud", DeployConfig(), "unknown deploy target"),
        ("local", DeployConfig(canary_traffic_percent=150), "canary_traffic_percent"),
        ("local", DeployConfig(protocol_version="v3"), "protocol_version"),
        ("local", DeployConfig(storage_uri="gs://bucket/x"), "gs://bucket/x"),
    ],
)
def test_bad_deploy_settings_are_named(store, tmp_path, target, config, message):
    with pytest.raises(ImageLingoError, match=message):
        deploy(store, tmp_path / "d", target, config)
