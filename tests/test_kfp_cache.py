"""Retraining keyed on the data, wherever the run starts: the compiled pipeline, run through a
port of the KFP backend's cache rule (tests/kfp_backend_cache.py), re-runs ingest and everything
after it when the data behind `source` changed, serves everything up to package from the cache
when it did not, and never serves the release (registry, gate) or deploy from it. The same rule
on the spec from before the fingerprint task shows why: a UI run (no data_fingerprint) of
changed data was served from the cache, and a cached evaluate skipped registering."""

import pytest
import yaml
from kfp_backend_cache import BackendCache

from imagelingo.cluster.platforms import TARGETS
from imagelingo.orchestration import PIPELINES

BEFORE = (
    PIPELINES.parent / "tests/fixtures/kubeflow-pipelines/imagelingo_pipeline.before-issue-21.yaml"
)
UP_TO_PACKAGE = ("ingest", "vocab", "features", "train", "evaluate", "package")


def world(data: dict):
    """What the tasks answer: the fingerprint task reports the data's current identity (what
    imagelingo.storage.fingerprint computes of it), the gates pass."""

    def outputs(task: str, params: dict) -> dict:
        return {
            "fingerprint": {"Output": data["identity"]},
            "evaluate": {"Output": 0.5},
            "release": {"Output": True},
            "deploy": {"Output": "http://imagelingo"},
        }.get(task, {})

    return outputs


@pytest.mark.parametrize("name", list(TARGETS))
def test_unchanged_data_is_cached_up_to_package_changed_data_reruns_and_release_always_runs(name):
    spec = next(yaml.safe_load_all((PIPELINES / TARGETS[name].pipeline_file).read_text()))
    data = {"identity": "s3:aaaa"}
    backend = BackendCache(spec, world(data))
    arguments = {"source": "s3://bucket/flickr8k"}  # what a UI or recurring run passes

    first = backend.run(arguments)
    assert set(first.values()) == {"done"}

    same = backend.run(arguments)
    assert {t: same[t] for t in UP_TO_PACKAGE} == dict.fromkeys(UP_TO_PACKAGE, "cached")
    assert same["fingerprint"] == same["release"] == same["deploy"] == "done"

    data["identity"] = "s3:bbbb"  # objects under the same prefix changed
    changed = backend.run(arguments)
    assert set(changed.values()) == {"done"}


def test_before_the_fingerprint_task_changed_data_was_served_from_the_cache():
    spec = next(yaml.safe_load_all(BEFORE.read_text()))
    data = {"identity": "ignored: that spec never asks"}
    backend = BackendCache(spec, world(data))
    arguments = {"source": "s3://bucket/flickr8k"}  # data_fingerprint left at its default ""
    backend.run(arguments)
    data["identity"] = "changed"
    again = backend.run(arguments)
    assert again["ingest"] == "cached"  # the new data is never read
    assert again["evaluate"] == "cached"  # nor is a version registered (evaluate registered)
