"""The test tiers. `make test` runs every test but the walkthroughs, `make test-fast` also
leaves out the ones marked slow, `make test-walkthroughs` runs only the walkthroughs (.ci/run runs
both make targets). A test is slow when it trains a model or starts a server (a process, or an
HTTP listener on 127.0.0.1, even one in a thread). It gets the mark from a fixture listed in
SLOW_FIXTURES (conftest.py marks every test that uses one, directly or through another fixture)
or, where it does the work itself, from @pytest.mark.slow or its module's pytestmark. A
walkthrough runs the whole pipeline as a user does: the README's commands in a copy of the
project, or the DAG through kfp.local (WALKTHROUGH_FIXTURES, or @pytest.mark.walkthrough). They
are two thirds of the suite's time, so `make test` stays under 12 minutes on a 2-core AVX2
machine (issue 28; benchmarks/RESULTS.md).

`unmarked_work` is the guard against a forgotten mark: it reads the source of a test and of its
fixtures (and of the helpers they call in the same file) for a call that trains or serves.
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

TESTS = Path(__file__).resolve().parent

# Fixtures that train a model or start a server, and what they do.
SLOW_FIXTURES = {
    "trained_model": "trains a decoder (conftest.py)",
    "mlflow_server": "an MLflow tracking server process (conftest.py)",
    "s3_server": "moto's S3 server process (conftest.py)",
    "uninterrupted": "trains a decoder (test_checkpoint_resume.py)",
    "kfp_api": "a KFP API on 127.0.0.1 (test_submit.py)",
    "archive_server": "an HTTP file server on 127.0.0.1 (test_remote_sources.py)",
    "server": "TorchServe or the kserve predictor (test_serving_http.py)",
    "limited_echo_server": "uvicorn on 127.0.0.1 (test_serving_limits.py)",
    "backend": "a recording HTTP server on 127.0.0.1 behind the front (test_pod_front.py)",
    "front": "the protocol front on 127.0.0.1 (test_pod_front.py)",
    "weekly": "the pipeline through kfp.local, which trains (test_pipeline_run.py)",
    "ce_run": "trains a decoder to start SCST from (test_scst.py)",
    "project": "where test_readme.py runs the README: make demo trains, imagelingo serve serves",
    "box": "the box: a control plane and KServe, or a node too (tests/box/, IMAGELINGO_BOX=1)",
}

# Fixtures that run the whole pipeline as a user does (each also in SLOW_FIXTURES or using one).
WALKTHROUGH_FIXTURES = {
    "project": "test_readme.py: the README's commands in a copy of the project",
    "stages": "test_readme.py: the README's stage commands one by one",
    "weekly": "test_pipeline_run.py: weekly retraining runs of the DAG through kfp.local",
}

# Called by these names, a function trains or serves.
TRAINS = {"train", "run_local"}  # imagelingo.train.train; orchestration.run_local (kfp.local)
SERVES = {"Popen", "ServerProcess", "LocalTorchServe", "LocalKServe", "local_server"}
SERVES |= {"HTTPServer", "ThreadingHTTPServer", "TCPServer", "Server"}  # uvicorn
CLI_TRAINS = {"train", "run", "demo"}  # main(["train", ...]); `serve` refuses a bad store first


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _first_string(args: list[ast.expr]) -> str | None:
    first = args[0] if args else None
    if isinstance(first, ast.List) and first.elts:
        first = first.elts[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    return None


def _work(call: ast.Call) -> str | None:
    """What this call starts, if it trains or serves."""
    name, argument = _name(call.func), _first_string(call.args)
    # train(), not torch's decoder.train(), which only sets the training mode
    method_train = name == "train" and isinstance(call.func, ast.Attribute)
    if name in SERVES or (name in TRAINS and not method_train):
        return f"{name}()"
    if name == "main" and argument in CLI_TRAINS:
        return f'main(["{argument}", ...])'
    if name == "getfixturevalue" and argument in SLOW_FIXTURES:
        return f'getfixturevalue("{argument}")'
    return None


@functools.cache
def _definitions(path: Path) -> tuple[dict[str, list], dict[str, list]]:
    """The functions of a file by name: module level, and methods of its classes."""
    functions: dict[str, list] = {}
    methods: dict[str, list] = {}
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    methods.setdefault(item.name, []).append(item)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.setdefault(node.name, []).append(node)
    return functions, methods


def work_in(path: Path, name: str, seen: frozenset[str] = frozenset()) -> str | None:
    """The first call in function `name` of `path`, or in a function or method of that file it
    calls, that trains or serves: "train() via run()"; None when there is none."""
    functions, methods = _definitions(path)
    for definition in functions.get(name, []) + methods.get(name, []):
        for call in (node for node in ast.walk(definition) if isinstance(node, ast.Call)):
            if found := _work(call):
                return found
            callee = _name(call.func)
            local = functions if isinstance(call.func, ast.Name) else methods
            followed = callee in local and callee not in seen | {name}
            if followed and (found := work_in(path, callee, seen | {name})):
                return f"{found} via {callee}()"
    return None


def _source(function) -> tuple[Path, str] | None:
    """Where a test or fixture function is defined, if it is under tests/."""
    function = inspect.unwrap(getattr(function, "_get_wrapped_function", lambda: function)())
    try:
        path = Path(inspect.getsourcefile(function)).resolve()
    except TypeError:
        return None
    return (path, function.__name__) if path.is_relative_to(TESTS) else None


def unmarked_work(item) -> str | None:
    """What a collected test (or one of its fixtures) does that trains or serves, or None."""
    functions = [("the test", getattr(item, "function", None))]
    fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    functions += [(f"fixture {name}", d.func) for name, defs in fixtures.items() for d in defs]
    for role, function in functions:
        where = _source(function) if function is not None else None
        if where and (found := work_in(*where)):
            return f"{role} calls {found}"
    return None
