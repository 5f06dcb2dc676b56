"""`imagelingo submit` and `schedule` at their boundary: what they hand to kfp.Client."""

import pytest

from imagelingo.errors import ImageLingoError
from imagelingo.orchestration import PIPELINE_YAML, parse_arguments, schedule, submit


class FakeKfp:
    def __init__(self):
        self.calls = []

    def create_run_from_pipeline_package(self, path, arguments, experiment_name):
        self.calls.append(("run", path, arguments, experiment_name))
        return type("Run", (), {"run_id": "run-1"})()

    def create_experiment(self, name):
        return type("Experiment", (), {"experiment_id": "exp-1"})()

    def create_recurring_run(self, **kwargs):
        self.calls.append(("recurring", kwargs))
        return type("Job", (), {"recurring_run_id": "job-1"})()


def test_submit_sends_the_compiled_pipeline_with_typed_arguments():
    client = FakeKfp()
    arguments = parse_arguments(["epochs=3", "lr=0.0005", "source=s3://b/f8k"])
    assert submit("http://kfp", "exp", arguments, kfp_client=client) == "run-1"
    ((kind, path, sent, experiment),) = client.calls
    assert (kind, experiment) == ("run", "exp")
    assert path.endswith("pipelines/imagelingo_pipeline.yaml") and path != str(PIPELINE_YAML)
    assert sent == {"epochs": 3, "lr": 0.0005, "source": "s3://b/f8k"}


def test_schedule_uses_six_field_cron():
    client = FakeKfp()
    assert schedule("http://kfp", "0 0 3 * * *", "exp", {}, kfp_client=client) == "job-1"
    assert client.calls[0][1]["cron_expression"] == "0 0 3 * * *"
    with pytest.raises(ImageLingoError, match="6 fields"):
        schedule("http://kfp", "0 3 * * *", "exp", {}, kfp_client=client)


def test_unknown_pipeline_argument_names_the_known_ones():
    with pytest.raises(ImageLingoError, match="epochs"):
        parse_arguments(["epoch=3"])
