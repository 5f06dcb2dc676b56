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
from imagelingo.orchestration import (
    PIPELINE_YAML,
    Access,
    parse_arguments,
    schedule,
    submit,
    with_fingerprint,
)
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


def test_submit_sends_the_compiled_pipeline_with_typed_arguments():
    client = FakeKfp()
    arguments = parse_arguments(["epochs=3", "lr=0.0005", "source=s3://b/f8k"])
    assert submit("http://kfp", "exp", arguments, kfp_client=client) == "run-1"
    ((kind, path, sent, experiment, namespace),) = client.calls
    assert (kind, experiment, namespace) == ("run", "exp", None)
    assert path.endswith("pipelines/imagelingo_pipeline.yaml") and path != str(PIPELINE_YAML)
    assert sent == {"epochs": 3, "lr": 0.0005, "source": "s3://b/f8k"}


def test_schedule_uses_six_field_cron():
    client = FakeKfp()
    assert schedule("http://kfp", "0 0 3 * * *", "exp", {}, kfp_client=client) == "job-1"
    assert client.calls[0][1]["cron_expression"] == "0 0 3 * * *"
    with pytest.raises(ImageLingoError, match="6 fields"):
        schedule("http://kfp", "0 3 * * *", "exp", {}, kfp_client=client)


def test_a_recurring_run_without_a_fingerprint_reads_the_data_every_time():
    client = FakeKfp()
    schedule("http://kfp", "0 0 3 * * 1", "exp", {"source": "s3://b/f"}, kfp_client=client)
    assert client.calls[0][1]["enable_caching"] is False
    schedule("http://kfp", "0 0 3 * * 1", "exp", {"data_fingerprint": "dvc:1"}, kfp_client=client)
    assert client.calls[1][1]["enable_caching"] is None  # the pipeline's own caching


def test_unknown_pipeline_argument_names_the_known_ones():
    with pytest.raises(ImageLingoError, match="epochs"):
        parse_arguments(["epoch=3"])


def test_submit_fingerprints_the_source_unless_given(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one")
    first = with_fingerprint({"source": str(data)})["data_fingerprint"]
    assert first.startswith("dir:")
    (data / "a.txt").write_text("two")
    assert with_fingerprint({"source": str(data)})["data_fingerprint"] != first
    assert with_fingerprint({"source": str(data), "data_fingerprint": "x"})["data_fingerprint"] == (
        "x"
    )


# --- a KFP API on 127.0.0.1 -------------------------------------------------------------------

TOKEN = "sa-token-123"
COOKIE = "authservice_session=abc"
NAMESPACES = {"team-a"}


class KfpApi(BaseHTTPRequestHandler):
    """The routes kfp.Client 2.17 calls for create_run_from_pipeline_package, answering like the
    KFP API server of a multi-user install (grpc-gateway JSON errors)."""

    requests: list = []

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
            self._answer(200, {"multi_user": True})
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
    KfpApi.requests = []
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
        + ["--param", "epochs=2", "--param", "data_fingerprint=dvc:abc"]
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
    assert parameters["epochs"] == 2 and parameters["data_fingerprint"] == "dvc:abc"
    assert "ingest" in json.dumps(run["body"]["pipeline_spec"])


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
