"""`imagelingo submit` and `schedule` at their boundary: what they hand to kfp.Client, and what
kfp.Client sends to a KFP API. The API is a real HTTP server on 127.0.0.1 answering the KFP v2beta1
routes submit uses the way a multi-user Kubeflow install does (bearer token or cookie required,
runs only in known profile namespaces); an unreachable host is a closed port."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from imagelingo.cli import main
from imagelingo.errors import ImageLingoError
from imagelingo.orchestration import Access, parse_arguments, schedule, submit
from imagelingo.serving.torchserve import free_port


class FakeKfp:
    def __init__(self):
        self.calls = []

    def create_run_from_pipeline_package(self, path, arguments, experiment_name, namespace=None):
        self.calls.append(("run", path, arguments, experiment_name, namespace))
        return type("Run", (), {"run_id": "run-1"})()

    def create_experiment(self, name, namespace=None):
        return type("Experiment", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, **kwargs):
        self.calls.append(("recurring", kwargs))
        return type("Job", (), {"recurring_run_id": "job-1"})()


def test_submit_sends_the_pipeline_compiled_for_the_backend_it_reports(kfp_api, clean_env):
    client = FakeKfp()
    arguments = parse_arguments(["epochs=3", "lr=0.0005", "source=s3://b/f8k"])
    KfpApi.tag = "2.5.0"
    assert submit(kfp_api, "exp", arguments, kfp_client=client) == "run-1"
    ((kind, path, sent, experiment, namespace),) = client.calls
    assert (kind, experiment, namespace) == ("run", "exp", None)
    assert path.endswith("/imagelingo_pipeline.kubeflow-1.10.yaml")
    assert sent == {"epochs": 3, "lr": 0.0005, "source": "s3://b/f8k"}
    KfpApi.tag = "2.15.0"
    submit(kfp_api, "exp", arguments, kfp_client=client)
    assert client.calls[-1][1].endswith("/imagelingo_pipeline.kubeflow-1.11.yaml")


def test_schedule_uses_six_field_cron_and_the_pipelines_own_caching(kfp_api, clean_env):
    """Each scheduled run fingerprints its data in its first task: caching stays on."""
    client = FakeKfp()
    assert schedule(kfp_api, "0 0 3 * * *", "exp", {}, kfp_client=client) == "job-1"
    assert client.calls[0][1]["cron_expression"] == "0 0 3 * * *"
    assert "enable_caching" not in client.calls[0][1]
    with pytest.raises(ImageLingoError, match="6 fields"):
        schedule(kfp_api, "0 3 * * *", "exp", {}, kfp_client=client)


def test_unknown_pipeline_argument_names_the_known_ones():
    with pytest.raises(ImageLingoError, match="epochs"):
        parse_arguments(["epoch=3"])


# --- a KFP API on 127.0.0.1 -------------------------------------------------------------------

TOKEN = "sa-token-123"
COOKIE = "oauth2_proxy_kubeflow=abc"  # Kubeflow 1.10/1.11 oauth2-proxy cookie_name
NAMESPACES = {"team-a"}


class KfpApi(BaseHTTPRequestHandler):
    """The routes kfp.Client 2.17 calls for create_run_from_pipeline_package, answering like the
    KFP API server of a multi-user install (grpc-gateway JSON errors)."""

    requests: list = []
    tag = "2.15.0"  # the backend version its healthz reports

    def log_message(self, *args):
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        auth, cookie = self.headers.get("Authorization", ""), self.headers.get("Cookie", "")
        if auth == f"Bearer {TOKEN}" or COOKIE in cookie:
            return True
        self._answer(401, {"code": 16, "message": "Unauthenticated: no valid token or cookie"})
        return False

    def _namespace_ok(self, namespace: str) -> bool:
        if namespace in NAMESPACES:
            return True
        self._answer(
            403,
            {
                "code": 7,
                "message": f"Failed to authorize with API: PermissionDenied: User 'ci' is not "
                f"authorized with reason:  (request: &ResourceAttributes{{Namespace:{namespace},"
                "Verb:create,Group:pipelines.kubeflow.org,Resource:experiments}})",
            },
        )
        return False

    def _record(self, body=None):
        KfpApi.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization", ""),
                "cookie": self.headers.get("Cookie", ""),
                "body": body,
            }
        )

    def do_GET(self):
        self._record()
        url = urlparse(self.path)
        if url.path == "/apis/v2beta1/healthz":
            # what the API server writes (kubeflow/pipelines 2.15.0 backend/src/apiserver/
            # main.go:362-365). TAG_NAME is the image's build argument (backend/Dockerfile:64-65),
            # which the release images leave "unknown": a named version is a custom build;
            # KfpApi.healthz replaces the answer (the UI server's, through Kubeflow's ingress).
            answer = {"commit_sha": "8fe8d7b", "tag_name": KfpApi.tag, "multi_user": True}
            self._answer(200, KfpApi.healthz or answer)
            return
        if not self._authorized():
            return
        if url.path == "/apis/v2beta1/experiments":
            namespace = parse_qs(url.query).get("namespace", [""])[0]
            if self._namespace_ok(namespace):
                self._answer(200, {"experiments": [], "total_size": 0})
            return
        self._answer(404, {"code": 5, "message": f"Not found: {url.path}"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self._record(body)
        if not self._authorized():
            return
        path = urlparse(self.path).path
        if path == "/apis/v2beta1/experiments":
            if self._namespace_ok(body.get("namespace", "")):
                self._answer(200, {**body, "experiment_id": "exp-9"})
        elif path == "/apis/v2beta1/runs":
            self._answer(200, {**body, "run_id": "run-42", "state": "PENDING"})
        else:
            self._answer(404, {"code": 5, "message": f"Not found: {path}"})


@pytest.fixture
def kfp_api():
    KfpApi.requests, KfpApi.tag, KfpApi.healthz = [], "2.15.0", None
    server = ThreadingHTTPServer(("127.0.0.1", 0), KfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("KF_PIPELINES_SA_TOKEN_PATH", "KFP_TOKEN", "KFP_COOKIES", "KFP_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home")  # no ~/.config/kfp/context.json
    return monkeypatch


def _runs():
    return [r for r in KfpApi.requests if r["method"] == "POST" and r["path"].endswith("/runs")]


def test_submit_with_the_service_account_token_file_and_a_namespace(
    kfp_api, clean_env, tmp_path, capsys
):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    clean_env.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    code = main(
        ["submit", "--host", kfp_api, "--namespace", "team-a", "--experiment", "retrain"]
        + ["--param", "epochs=2", "--image-pull-secret", "ghcr-pull"]
    )
    assert code == 0, capsys.readouterr().err
    assert "submitted run run-42" in capsys.readouterr().out
    authorized = [r for r in KfpApi.requests if not r["path"].endswith("/healthz")]
    assert authorized and all(r["authorization"] == f"Bearer {TOKEN}" for r in authorized)
    experiment = next(r for r in KfpApi.requests if r["path"] == "/apis/v2beta1/experiments")
    assert experiment["body"]["namespace"] == "team-a"
    (run,) = _runs()
    assert run["body"]["experiment_id"] == "exp-9"
    parameters = run["body"]["runtime_config"]["parameters"]
    assert parameters["epochs"] == 2
    spec = json.dumps(run["body"]["pipeline_spec"])
    assert "ingest" in spec and "comp-merge" in spec  # the 1.11 layout: sharded features
    assert spec.count('"ghcr-pull"') >= 10, spec[-2000:]  # every task


def test_submit_with_an_existing_token_or_cookies(kfp_api, clean_env, capsys):
    args = ["submit", "--host", kfp_api, "--namespace", "team-a", "--param", "epochs=1"]
    assert main([*args, "--token", TOKEN]) == 0
    assert _runs()[-1]["authorization"] == f"Bearer {TOKEN}"
    clean_env.setenv("KFP_COOKIES", COOKIE)
    assert main(args) == 0
    assert _runs()[-1]["cookie"] == COOKIE and not _runs()[-1]["authorization"]
    capsys.readouterr()


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_namespace_is_one_line_exit_2(kfp_api, clean_env, capsys):
    code = main(["submit", "--host", kfp_api, "--namespace", "nope", "--token", TOKEN])
    assert code == 2
    err = one_line_error(capsys)
    assert "namespace 'nope'" in err and "HTTP 403" in err
    assert not _runs()


def test_unreachable_host_is_one_line_exit_2(clean_env, capsys):
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["submit", "--host", host, "--token", TOKEN]) == 2
    err = one_line_error(capsys)
    assert f"cannot reach KFP at {host}" in err
    assert main(["schedule", "--host", host, "--cron", "0 0 3 * * *"]) == 2
    assert "cannot reach KFP" in one_line_error(capsys)


def test_missing_credentials_are_one_line_exit_2(kfp_api, clean_env, tmp_path, capsys):
    # no credentials at all: the API answers 401
    assert main(["submit", "--host", kfp_api, "--namespace", "team-a"]) == 2
    assert "HTTP 401" in one_line_error(capsys)
    # the token file the environment names is missing (an unmounted Secret)
    clean_env.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "absent"))
    assert main(["submit", "--host", kfp_api, "--namespace", "team-a"]) == 2
    assert "no such token file" in one_line_error(capsys)
    assert not _runs()


def test_access_reads_the_environment(clean_env):
    clean_env.setenv("KFP_NAMESPACE", "team-b")
    clean_env.setenv("KFP_TOKEN", "t")
    access = Access.from_env("http://h")
    assert (access.namespace, access.token, access.cookies) == ("team-b", "t", "")
    assert Access.from_env("http://h", namespace="x").namespace == "x"


def test_an_unsupported_backend_is_one_line_naming_it_and_the_supported_exit_2(
    kfp_api, clean_env, capsys
):
    KfpApi.tag = "2.3.0"
    assert main(["submit", "--host", kfp_api, "--token", TOKEN]) == 2
    err = one_line_error(capsys)
    assert "KFP backend 2.3.0 is not supported" in err and "2.5.0 (kubeflow-1.10)" in err
    assert "2.15.0 (kubeflow-1.11)" in err
    assert not _runs()


def test_a_target_that_is_not_the_backends_is_refused(kfp_api, clean_env, capsys):
    KfpApi.tag = "2.5.0"
    args = ["submit", "--host", kfp_api, "--token", TOKEN, "--namespace", "team-a"]
    assert main([*args, "--target", "kubeflow-1.11"]) == 2
    assert "--target kubeflow-1.11 is for KFP 2.15.0" in one_line_error(capsys)
    assert main([*args, "--target", "kubeflow-1.10"]) == 0
    capsys.readouterr()


def test_a_backend_that_hides_its_version_needs_a_target(kfp_api, clean_env, capsys):
    KfpApi.tag = "unknown"  # an image built without TAG_NAME
    args = ["submit", "--host", kfp_api, "--token", TOKEN, "--namespace", "team-a"]
    assert main(args) == 2
    assert "does not name its version" in one_line_error(capsys)
    assert main([*args, "--target", "kubeflow-1.10"]) == 0
    assert "comp-merge" not in json.dumps(_runs()[-1]["body"]["pipeline_spec"])
    capsys.readouterr()


def ui_server_healthz(api_server_tag: str, ready: bool = True) -> dict:
    """What Kubeflow's ingress answers on /pipeline/apis/v2beta1/healthz: it routes /pipeline to
    the UI server, whose own handler copies the API server's tag_name into apiServerTagName
    (kubeflow/pipelines 2.15.0 frontend/server/handlers/healthz.ts:77-90; 2.5.0 :76-89) and reads
    its own TAG_NAME file, empty in the release images (frontend/Dockerfile:21-23)."""
    return {
        "apiServerCommitHash": "8fe8d7b" if ready else None,
        "apiServerTagName": api_server_tag if ready else None,
        "apiServerMultiUser": True if ready else None,
        "multi_user": True if ready else None,
        "apiServerReady": ready,
        "buildDate": "",
        "frontendCommitHash": "",
        "frontendTagName": "",
    }


def test_a_stock_kubeflow_through_its_ingress_needs_a_target_exit_2(kfp_api, clean_env, capsys):
    """Issue 27, defect 2: a stock Kubeflow names no version (the UI server says
    apiServerTagName "unknown"), so auto cannot pick; one line says to pass --target."""
    KfpApi.healthz = ui_server_healthz("unknown")
    args = ["submit", "--host", kfp_api, "--token", TOKEN, "--namespace", "team-a"]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "does not name its version ({'apiServerTagName': 'unknown'}" in err
    assert "pass --target, one of kubeflow-1.10, kubeflow-1.11" in err
    assert not _runs()
    assert main([*args, "--target", "kubeflow-1.11"]) == 0
    assert "comp-merge" in json.dumps(_runs()[-1]["body"]["pipeline_spec"])
    capsys.readouterr()


def test_a_version_the_ui_server_relays_picks_the_target(kfp_api, clean_env, capsys):
    KfpApi.healthz = ui_server_healthz("2.5.0")  # a backend built with TAG_NAME
    args = ["submit", "--host", kfp_api, "--token", TOKEN, "--namespace", "team-a"]
    assert main(args) == 0
    assert "comp-merge" not in json.dumps(_runs()[-1]["body"]["pipeline_spec"])
    assert main([*args, "--target", "kubeflow-1.11"]) == 2
    assert "--target kubeflow-1.11 is for KFP 2.15.0" in one_line_error(capsys)


def test_a_ui_server_without_its_api_server_is_one_line(kfp_api, clean_env, capsys):
    KfpApi.healthz = ui_server_healthz("", ready=False)
    args = ["submit", "--host", kfp_api, "--token", TOKEN, "--target", "kubeflow-1.11"]
    assert main(args) == 2
    assert "apiServerReady false" in one_line_error(capsys)
    assert not _runs()
