"""`make test-fast` leaves out exactly the tests marked slow, and the mark cannot be forgotten: a
test using a fixture of SLOW_FIXTURES is marked by conftest.py, and one whose code (or a fixture's,
or a helper's they call) trains a model or starts a server without the mark stops the run."""

import ast
import textwrap

import pytest
from conftest import pytest_collection_modifyitems
from tiers import SLOW_FIXTURES, TESTS, work_in

from imagelingo.train import train


class Collected:
    """The parts of a collected pytest item that the hook reads and writes."""

    def __init__(self, function, fixturenames=()):
        self.function, self.fixturenames = function, list(fixturenames)
        self.nodeid, self.marks = f"tests/test_tiers.py::{function.__name__}", []

    def get_closest_marker(self, name):
        return next((mark for mark in self.marks if mark.name == name), None)

    def add_marker(self, marker):
        self.marks.append(marker.mark)


def trains_without_the_mark(dirs):  # never run: the guard reads its source
    train(dirs["dataset"], dirs["vocab_file"], dirs["features"], dirs["out"])


def reads_a_file(path):
    return path.read_text()


def test_a_test_that_trains_without_the_mark_stops_the_run():
    with pytest.raises(pytest.UsageError, match=r"trains_without_the_mark: the test calls train"):
        pytest_collection_modifyitems([Collected(trains_without_the_mark)])


def test_a_test_using_a_slow_fixture_is_marked_slow_and_others_are_left_alone():
    serving, plain = Collected(reads_a_file, ["tmp_path", "s3_server"]), Collected(reads_a_file)
    pytest_collection_modifyitems([serving, plain])
    assert serving.get_closest_marker("slow") and not plain.get_closest_marker("slow")


def test_the_guard_follows_helpers_and_methods_and_ignores_what_neither_trains_nor_serves(
    tmp_path,
):
    path = tmp_path / "test_example.py"
    path.write_text(
        textwrap.dedent(
            """
            def fit(dirs):
                return train(dirs)

            class Site:
                def start(self):
                    return subprocess.Popen(["moto_server"])

            def test_fits(dirs):
                fit(dirs)

            def test_serves(site):
                Site().start()

            def test_runs_the_pipeline():
                main(["run", "--source", "synthetic"])

            def test_asks_for_a_server(request):
                request.getfixturevalue("s3_server")

            def test_sets_the_training_mode(decoder):
                decoder.train()

            def test_refuses_a_folder_that_is_no_model_store():
                main(["serve", "nope"])
            """
        )
    )
    assert work_in(path, "test_fits") == "train() via fit()"
    assert work_in(path, "test_serves") == "Popen() via start()"
    assert work_in(path, "test_runs_the_pipeline") == 'main(["run", ...])'
    assert work_in(path, "test_asks_for_a_server") == 'getfixturevalue("s3_server")'
    assert work_in(path, "test_sets_the_training_mode") is None
    assert work_in(path, "test_refuses_a_folder_that_is_no_model_store") is None


def test_every_fixture_that_trains_or_serves_is_a_slow_fixture():
    """Including those no test uses yet: a fixture's mark must not depend on its tests' marks."""
    unlisted = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            fixture = isinstance(node, ast.FunctionDef) and any(
                "fixture" in ast.unparse(decorator) for decorator in node.decorator_list
            )
            if not fixture or node.name in SLOW_FIXTURES:
                continue
            uses_one = {argument.arg for argument in node.args.args} & SLOW_FIXTURES.keys()
            if (work := work_in(path, node.name)) and not uses_one:
                unlisted.append(f"{path.relative_to(TESTS)}::{node.name} calls {work}")
    assert not unlisted, f"add these to SLOW_FIXTURES (tests/tiers.py): {unlisted}"


def test_a_test_using_a_walkthrough_fixture_is_a_walkthrough_and_slow():
    item = Collected(reads_a_file, fixturenames=["project"])
    pytest_collection_modifyitems([item])
    assert sorted(mark.name for mark in item.marks) == ["slow", "walkthrough"]
