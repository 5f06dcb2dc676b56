"""`imagelingo deploy` against the real API server and KServe's webhooks and controller (the
control plane of control_plane.py, one per target): the checks that run before anything is
uploaded or changed, each rollout step as the API server stores it after KServe's webhooks, the
child KServe builds for each mode, and the command line. These ran against a stand-in API server
and controller (tests/fake_kube.py, tests/fake_kserve.py) until issue 26 retired them.

Nothing becomes Ready here (no kubelet, no Knative controller), so deploy's wait is replaced by
`no_wait`, which records what deploy asked it to wait for; waiting on real readiness, captions
and the broken model are tests/box/test_e2e.py's (the kubelet's box). The model store goes to moto
on 127.0.0.1 (conftest's s3_server); tests/box/test_objectstore.py has the release's stores.
"""

from __future__ import annotations

import re
import uuid

import pytest
import yaml
from box_cluster import REPO, poll
from control_plane import NOT_DEPLOYS, as_admin, box  # as_admin, box: the fixtures

from imagelingo import deploy as stage
from imagelingo.cli import main
from imagelingo.cluster.kserve import SOURCE_URI
from imagelingo.deploy import (
    PREVIOUS_URI_ANNOTATION,
    DeployConfig,
    KubeApi,
    change_traffic,
    deploy,
    rollout,
    store_version,
)
from imagelingo.errors import ImageLingoError

pytestmark = pytest.mark.slow

KEYS = {"AWS_ACCESS_KEY_ID": "box", "AWS_SECRET_ACCESS_KEY": "box"}
PROFILE = {"app.kubernetes.io/part-of": "kubeflow-profile"}
S3_ANNOTATIONS = {  # what manifests/secrets/minio gives the Secret
    "serving.kserve.io/s3-endpoint": "minio-service.kubeflow:9000",
    "serving.kserve.io/s3-usehttps": "0",
}
ISVC = "imagelingo"


def namespace(
    box,
    secret: dict | None = KEYS,
    runtime: bool = True,
    labels: dict = PROFILE,
    secret_annotations: dict = S3_ANNOTATIONS,
) -> str:
    """A new namespace as manifests/overlays/minio makes it (a profile's, by default): the
    predictor's ServiceAccount listing the S3 Secret, the Secret with `secret` and the runtimes;
    returns its name."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    meta = {"namespace": ns}
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "imagelingo-deployer", **meta},
            "secrets": [{"name": "imagelingo-s3"}],
        },
    ]
    if secret is not None:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "imagelingo-s3", "annotations": secret_annotations, **meta},
                "stringData": secret,
            }
        )
    if runtime:
        rendered = box.kubectl("kustomize", REPO / "manifests/overlays/minio").stdout
        objects += [
            {**r, "metadata": {**r["metadata"], **meta}}
            for r in yaml.safe_load_all(rendered)
            if r["kind"] == "ServingRuntime"
        ]
    box.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))
    return ns


def make_store(root, content: bytes):
    (root / "model-store").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "model-store" / "imagelingo.mar").write_bytes(content)
    (root / "config" / "direct.properties").write_text("inference_address=http://0.0.0.0:8080\n")
    (root / "config" / "entrypoint.py").write_text("# the runtime's PID 1\n")
    return root


@pytest.fixture
def stores(tmp_path):
    return [make_store(tmp_path / f"store{i}", f"model {i}".encode()) for i in (1, 2, 3)]


@pytest.fixture
def api(as_admin) -> KubeApi:
    return KubeApi()


@pytest.fixture
def waits(monkeypatch) -> list[dict]:
    """deploy's wait for Ready, replaced: nothing becomes Ready without a kubelet. Records the
    API server's answer to each write deploy waited on."""
    asked: list[dict] = []

    def no_wait(api, config, before, written):
        asked.append(written)
        return written.get("status", {}).get("url", "")

    monkeypatch.setattr(stage, "wait_ready", no_wait)
    return asked


def knative_only(box):
    if box.env["TARGET"] == "kserve-0.20":
        pytest.skip("KServe 0.20's install holds no Knative (it pins Knative 1.21.1, not built)")


def stored(api: KubeApi, ns: str, name: str = ISVC) -> dict:
    return api.get_isvc(ns, name)


# --- checks before anything is uploaded or changed -----------------------------------------------


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"absent": True}, "namespace '{ns}' not found"),
        ({"secret": None}, "Secret 'imagelingo-s3' not found"),
        ({"secret": {"AWS_ACCESS_KEY_ID": "x"}}, "lacks .*AWS_SECRET_ACCESS_KEY"),
        ({"runtime": False}, "ServingRuntime 'imagelingo-torchserve' not found"),
        # issue 22 (8): Kubeflow's mlpipeline-minio-artifact names its keys otherwise
        (
            {"secret": {"accesskey": "x", "secretkey": "x"}},
            "Kubeflow's pipeline keys accesskey/secretkey, not the AWS_ACCESS_KEY_ID/",
        ),
        # no endpoint annotation: KServe's storage-initializer would go to AWS
        ({"secret_annotations": {}}, "no serving.kserve.io/s3-endpoint annotation"),
        # issue 22 (1): Kubeflow's object store admits profile namespaces only
        ({"labels": {}}, "lacks the label app.kubernetes.io/part-of=kubeflow-profile"),
    ],
)
def test_cluster_problems_stop_deploy_before_any_upload(
    box, api, stores, tmp_path, bucket, uploaded, waits, setup, message
):
    setup = dict(setup)  # shared by every target's run of this case
    absent = setup.pop("absent", False)
    ns = f"t-{uuid.uuid4().hex[:8]}" if absent else namespace(box, **setup)
    with pytest.raises(ImageLingoError, match=message.format(ns=ns)):
        deploy(stores[0], tmp_path / "d", "kserve", DeployConfig(namespace=ns, storage_uri=bucket))
    assert uploaded() == []
    assert absent or stored(api, ns) is None


def test_an_unwritable_bucket_stops_deploy_before_any_change(
    box, api, stores, tmp_path, s3_server, waits
):
    ns = namespace(box)
    with pytest.raises(ImageLingoError, match="S3 bucket 'absent'"):
        config = DeployConfig(namespace=ns, storage_uri="s3://absent/x")
        deploy(stores[0], tmp_path / "d", "kserve", config, s3_endpoint_url=None)
    assert stored(api, ns) is None


def test_an_unknown_registry_version_stops_deploy_before_any_change(
    box, api, stores, bucket, tmp_path, waits
):
    ns = namespace(box)
    with pytest.raises(ImageLingoError, match="registry has no version 42"):
        config = DeployConfig(namespace=ns, storage_uri=bucket)
        deploy(stores[0], tmp_path / "d", "kserve", config, model_version="42")
    assert stored(api, ns) is None


def test_deploy_uploads_the_version_then_creates_the_service(
    box, api, stores, tmp_path, bucket, uploaded, waits
):
    ns = namespace(box)
    record = deploy(
        stores[0], tmp_path / "d", "kserve", DeployConfig(namespace=ns, storage_uri=bucket)
    )
    version = store_version(stores[0])
    assert sorted(uploaded()) == [
        f"imagelingo/{version}/config/direct.properties",
        f"imagelingo/{version}/config/entrypoint.py",
        f"imagelingo/{version}/model-store/imagelingo.mar",
    ]
    assert record["action"] == "created"
    live = stored(api, ns)
    assert live["spec"]["predictor"]["model"]["storageUri"] == f"{bucket}/{version}"
    assert [w["metadata"]["uid"] for w in waits] == [live["metadata"]["uid"]]


def test_a_mistyped_field_is_refused_not_dropped(box, api):
    """The API server prunes a field a CRD's schema does not know, with only a warning, unless
    the client asks for strict field validation as kubectl does (fieldValidation=Strict): a
    field deploy renders wrong must fail the write, not vanish from the stored object."""
    ns = namespace(box)
    body = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "typo", "namespace": ns},
        "spec": {
            "predictor": {"model": {"modelFormat": {"name": "pytorch"}, "storageURI": "s3://b/p"}}
        },
    }
    with pytest.raises(ImageLingoError, match=r"storageURI"):
        api.create_isvc(body)
    assert stored(api, ns, "typo") is None


# --- rollout steps, as the API server stores them -----------------------------------------------


def test_knative_create_canary_promote_rollback(box, api, stores, bucket, tmp_path, waits):
    knative_only(box)
    ns = namespace(box)
    v1, v2 = (f"{bucket}/{store_version(s)}" for s in stores[:2])
    config = DeployConfig(namespace=ns, storage_uri=bucket)
    assert deploy(stores[0], tmp_path / "d1", "kserve", config)["action"] == "created"
    created = stored(api, ns)["spec"]["predictor"]
    assert created["model"]["storageUri"] == v1 and "canaryTrafficPercent" not in created

    canary = DeployConfig(namespace=ns, storage_uri=bucket, canary_traffic_percent=20)
    assert deploy(stores[1], tmp_path / "d2", "kserve", canary)["action"] == "replaced"
    live = stored(api, ns)
    # a new storageUri: a new Knative revision, 20% on it, 80% on the last rolled-out one (v1)
    assert live["spec"]["predictor"]["model"]["storageUri"] == v2
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert live["metadata"]["annotations"][PREVIOUS_URI_ANNOTATION] == v1

    change_traffic("promote", config)
    promoted = stored(api, ns)["spec"]["predictor"]
    assert promoted["model"]["storageUri"] == v2 and "canaryTrafficPercent" not in promoted

    change_traffic("rollback", config)  # after promotion: v1 again, all traffic
    live = stored(api, ns)
    rolled = live["spec"]["predictor"]
    assert rolled["model"]["storageUri"] == v1 and "canaryTrafficPercent" not in rolled
    assert live["metadata"]["generation"] == 4
    assert [w["metadata"]["generation"] for w in waits] == [1, 2, 3, 4]


def test_knative_rollback_during_a_canary_pins_the_previous_revision(
    box, api, stores, bucket, tmp_path, waits
):
    knative_only(box)
    ns = namespace(box)
    config = DeployConfig(namespace=ns, storage_uri=bucket)
    deploy(stores[0], tmp_path / "d1", "kserve", config)
    canary = DeployConfig(namespace=ns, storage_uri=bucket, canary_traffic_percent=30)
    deploy(stores[1], tmp_path / "d2", "kserve", canary)
    change_traffic("rollback", config)
    # KServe: canaryTrafficPercent 0 sends everything to the last rolled-out revision (v1) at
    # once, without new pods (ksvc_reconciler.go:134-152)
    assert stored(api, ns)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    with pytest.raises(ImageLingoError, match="rolled back"):
        change_traffic("promote", config)
    # the next version rolls out fully; the version to go back to is still v1, not the canary
    deploy(stores[2], tmp_path / "d3", "kserve", config)
    v1 = f"{bucket}/{store_version(stores[0])}"
    assert stored(api, ns)["metadata"]["annotations"][PREVIOUS_URI_ANNOTATION] == v1
    change_traffic("rollback", config)
    assert stored(api, ns)["spec"]["predictor"]["model"]["storageUri"] == v1


def test_a_full_deploy_after_a_canary_clears_it(box, api, stores, bucket, tmp_path, waits):
    """canary_traffic_percent=-1 must remove an earlier canaryTrafficPercent: deploy replaces
    the object (PUT); a merge patch that omits the field keeps it, as the API server shows."""
    knative_only(box)
    ns = namespace(box)
    deploy(stores[0], tmp_path / "d1", "kserve", DeployConfig(namespace=ns, storage_uri=bucket))
    canary = DeployConfig(namespace=ns, storage_uri=bucket, canary_traffic_percent=10)
    deploy(stores[1], tmp_path / "d2", "kserve", canary)
    live = stored(api, ns)
    omitted = {k: v for k, v in live["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
    patch = yaml.safe_dump({"spec": {"predictor": omitted}})
    box.kubectl("-n", ns, "patch", "isvc", ISVC, "--type", "merge", "-p", patch)
    assert stored(api, ns)["spec"]["predictor"]["canaryTrafficPercent"] == 10  # kept

    deploy(stores[0], tmp_path / "d3", "kserve", DeployConfig(namespace=ns, storage_uri=bucket))
    assert "canaryTrafficPercent" not in stored(api, ns)["spec"]["predictor"]


def test_standard_mode_canary_is_a_second_predictor(box, api, stores, bucket, tmp_path, waits):
    ns = namespace(box)
    v1, v2 = (store_version(s) for s in stores[:2])
    config = DeployConfig(namespace=ns, storage_uri=bucket, mode="Standard")
    deploy(stores[0], tmp_path / "d1", "kserve", config)
    created = stored(api, ns)["spec"]
    assert created["predictor"]["scaleMetric"] == "cpu"  # HPA; concurrency is Knative-only
    canary = DeployConfig(
        namespace=ns, storage_uri=bucket, mode="Standard", canary_traffic_percent=25
    )
    if box.env["TARGET"] != "kserve-0.20":  # issue 22 (8): 0.15 has no spec.canary
        with pytest.raises(ImageLingoError, match=r"KServe 0.15 has no canary"):
            deploy(stores[1], tmp_path / "d2", "kserve", canary)
        assert stored(api, ns)["metadata"]["generation"] == 1
        return
    assert created["predictor"]["name"] == f"model-{v1}" and "canary" not in created
    deploy(stores[1], tmp_path / "d2", "kserve", canary)
    spec = stored(api, ns)["spec"]
    assert spec["predictor"]["model"]["storageUri"] == f"{bucket}/{v1}"  # stable unchanged
    (entry,) = spec["canary"]
    assert entry["trafficPercent"] == 25
    assert entry["predictor"]["name"] == f"model-{v2}"
    assert entry["predictor"]["model"]["storageUri"] == f"{bucket}/{v2}"
    assert "canaryTrafficPercent" not in spec["predictor"]  # ignored in Standard mode

    change_traffic("promote", config)
    spec = stored(api, ns)["spec"]
    # inference_service.go:36-42: the stable predictor takes the canary's name and model
    assert "canary" not in spec and spec["predictor"]["name"] == f"model-{v2}"
    assert spec["predictor"]["model"]["storageUri"] == f"{bucket}/{v2}"

    canary50 = DeployConfig(
        namespace=ns, storage_uri=bucket, mode="Standard", canary_traffic_percent=50
    )
    deploy(stores[0], tmp_path / "d3", "kserve", canary50)
    change_traffic("rollback", config)
    spec = stored(api, ns)["spec"]
    assert "canary" not in spec and spec["predictor"]["model"]["storageUri"] == f"{bucket}/{v2}"


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_kserve_builds_the_child_of_the_mode_asked_for(
    box, api, stores, bucket, tmp_path, waits, mode
):
    """issue 22 (8): KServe 0.15 runs a mode name it does not know (`Standard`) as its default,
    Serverless; deploy reads the served CRD and writes the name that release knows. What KServe
    built decides: a Knative Service, or the predictor's Deployment."""
    if mode == "Knative":
        knative_only(box)
    ns = namespace(box)
    config = DeployConfig(namespace=ns, storage_uri=bucket, mode=mode)
    deploy(stores[0], tmp_path / "d1", "kserve", config)
    uri = f"{bucket}/{store_version(stores[0])}"
    kind = "ksvc" if mode == "Knative" else "deployment"
    built = child(box, ns, kind)
    template = built["spec"]["template"]["metadata"]["annotations"]
    assert template[SOURCE_URI] == uri
    other = "deployment" if mode == "Knative" else "ksvc"
    if other == "deployment" or box.env["TARGET"] != "kserve-0.20":
        assert box.kubectl("-n", ns, "get", other, "-o", "name").stdout.strip() == ""


def child(box, ns: str, kind: str, timeout_s: float = 60) -> dict:
    """The predictor's Knative Service or Deployment, once KServe's controller has made it."""
    selector = f"serving.kserve.io/inferenceservice={ISVC}"
    (item,) = poll(
        f"a predictor {kind} made by KServe in {ns}",
        lambda: box.get("-n", ns, kind, "-l", selector)["items"],
        timeout_s,
    )
    return item


def test_the_mode_of_a_live_service_cannot_change(box, api, stores, bucket, tmp_path, waits):
    knative_only(box)
    ns = namespace(box)
    deploy(stores[0], tmp_path / "d1", "kserve", DeployConfig(namespace=ns, storage_uri=bucket))
    with pytest.raises(ImageLingoError, match="Knative mode"):
        config = DeployConfig(namespace=ns, storage_uri=bucket, mode="Standard")
        deploy(stores[1], tmp_path / "d2", "kserve", config)
    assert stored(api, ns)["metadata"]["generation"] == 1


def test_a_replace_keeps_what_others_own_on_the_object(box, api, stores, bucket, tmp_path, waits):
    """PUT replaces the spec, not KServe's finalizer or someone else's label/annotation."""
    ns = namespace(box)
    config = DeployConfig(namespace=ns, storage_uri=bucket, mode="Standard")
    deploy(stores[0], tmp_path / "d1", "kserve", config)
    theirs = {
        "metadata": {
            "labels": {"team": "vision"},
            "annotations": {"example.com/owner": "alice", "imagelingo.io/registry-version": "7"},
            "finalizers": ["example.com/keep", "inferenceservice.finalizers"],
        }
    }
    box.kubectl("-n", ns, "patch", "isvc", ISVC, "--type", "merge", "-p", yaml.safe_dump(theirs))
    deploy(stores[1], tmp_path / "d2", "kserve", config)
    meta = stored(api, ns)["metadata"]
    assert "example.com/keep" in meta["finalizers"]
    assert "inferenceservice.finalizers" in meta["finalizers"]
    assert meta["labels"]["team"] == "vision"
    assert meta["annotations"]["example.com/owner"] == "alice"
    assert "imagelingo.io/registry-version" not in meta["annotations"]  # ours, not rendered now


def test_a_write_by_someone_else_during_deploy_is_not_undone(
    box, api, stores, bucket, tmp_path, waits
):
    """A 409 on deploy's PUT is retried only when KServe's own fields moved (status, finalizer);
    a spec another deploy wrote meanwhile stops ours with nothing written."""
    ns = namespace(box)
    config = DeployConfig(namespace=ns, storage_uri=bucket, mode="Standard")
    deploy(stores[0], tmp_path / "d1", "kserve", config)
    read = api.get_isvc(ns, ISVC)
    theirs = rollout(read, config, f"{bucket}/theirs", "theirs")
    stage.apply(api, theirs, api.get_isvc(ns, ISVC))
    ours = rollout(read, config, f"{bucket}/ours", "ours")
    with pytest.raises(ImageLingoError, match="changed by someone else while deploy ran"):
        stage.apply(api, ours, read)
    live = stored(api, ns)
    assert "theirs" in str(live["spec"]) and "ours" not in str(live["spec"])


# --- the command line ----------------------------------------------------------------------------


def test_cli_names_an_unknown_namespace(as_admin, stores, tmp_path, capsys, bucket, uploaded):
    argv = [stores[0], "--target", "kserve", "--storage-uri", bucket, "--namespace", "nope"]
    code = main(["deploy", *map(str, argv), "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "namespace 'nope' not found" in err
    assert uploaded() == [] and not (tmp_path / "d").exists()


def test_cli_deploys_canaries_promotes_and_rolls_back(
    box, api, stores, tmp_path, capsys, bucket, waits
):
    knative_only(box)
    ns = namespace(box)
    common = ["--target", "kserve", "--namespace", ns]
    first = [str(stores[0]), *common, "--storage-uri", bucket, "--out", str(tmp_path / "d1")]
    assert main(["deploy", *first]) == 0
    second = [str(stores[1]), *common, "--storage-uri", bucket, "--out", str(tmp_path / "d2")]
    assert main(["deploy", *second, "--canary-traffic-percent", "10"]) == 0
    assert stored(api, ns)["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert main(["deploy", *common, "--promote"]) == 0
    assert "canaryTrafficPercent" not in stored(api, ns)["spec"]["predictor"]
    assert main(["deploy", *common, "--rollback"]) == 0
    uri = stored(api, ns)["spec"]["predictor"]["model"]["storageUri"]
    assert uri == f"{bucket}/{store_version(stores[0])}"
    out = capsys.readouterr().out
    assert f"created {ns}/imagelingo" in out and f"rollback: {ns}/imagelingo Ready" in out


def test_the_readme_apply_command_applies_all_but_the_inferenceservice(box):
    """The README's `kubectl apply -k ... -l ...` as written, by the release's kubectl, a server
    dry run on the real API server with KServe's webhooks (Knative mode: not KServe 0.20's)."""
    knative_only(box)
    readme = (REPO / "README.md").read_text()
    commands = set(
        re.findall(r"^\s*kubectl (apply -k manifests/overlays/minio -l '[^']+')", readme, re.M)
    )
    assert commands == {f"apply -k manifests/overlays/minio -l '{NOT_DEPLOYS}'"}, commands
    applied = []
    for args in (["-l", NOT_DEPLOYS], []):
        done = box.kubectl(
            "apply",
            "-k",
            REPO / "manifests/overlays/minio",
            *args,
            "--dry-run=server",
            "-o",
            "name",
        )
        applied.append(set(done.stdout.split()))
    filtered, everything = applied
    assert everything - filtered == {"inferenceservice.serving.kserve.io/imagelingo"}
    assert "servingruntime.serving.kserve.io/imagelingo-torchserve" in filtered


# --- cluster-wide: last, it patches KServe's default ClusterStorageContainer -------------------


def test_the_storage_initializer_runs_restricted_with_the_cluster_patch(
    box, api, stores, bucket, tmp_path, waits
):
    """issue 22 (7): KServe's pod webhook injects the storage-initializer with no securityContext
    (storage_initializer_injector.go:376-395 at v0.15.2), so Pod Security "restricted", enforced
    by the API server, refuses the predictor's Pod; with the README's cluster patch
    (manifests/cluster/storage-initializer-restricted.yaml, merged into the init container from
    the ClusterStorageContainer: :506-518) it is admitted."""
    restricted = {**PROFILE, "pod-security.kubernetes.io/enforce": "restricted"}
    config = {"storage_uri": bucket, "mode": "Standard"}
    refused = namespace(box, labels=restricted)
    deploy(stores[0], tmp_path / "d1", "kserve", DeployConfig(namespace=refused, **config))
    said = pod_creation(box, refused)
    assert 'violates PodSecurity "restricted:latest"' in said and "storage-initializer" in said

    readme = (REPO / "README.md").read_text()
    (command,) = set(re.findall(r"kubectl (patch clusterstoragecontainer default [^#\n]+)", readme))
    box.kubectl(*command.split())
    admitted = namespace(box, labels=restricted)
    deploy(stores[0], tmp_path / "d2", "kserve", DeployConfig(namespace=admitted, **config))
    assert pod_creation(box, admitted) == "created"
    (pod,) = api.predictor_pods(admitted, ISVC)
    (initializer,) = pod["spec"]["initContainers"]
    assert initializer["securityContext"]["capabilities"]["drop"] == ["ALL"]


def pod_creation(box, ns: str, timeout_s: float = 90) -> str:
    """ "created" once the predictor's ReplicaSet made a Pod, or the message of its FailedCreate
    event (admission refused the Pod)."""

    def created_or_refused() -> str:
        if box.get("-n", ns, "pods")["items"]:
            return "created"
        events = box.get("-n", ns, "events")["items"]
        failed = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
        return failed[-1] if failed else ""

    return poll(f"a predictor Pod or a FailedCreate in {ns}", created_or_refused, timeout_s)
