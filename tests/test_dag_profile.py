"""benchmarks/dag_profile.py: the per-task figures the Flickr8k benchmark records for the DAG run
(`imagelingo run`), on a real process tree shaped like kfp.local's (a top process whose command
line names `--function_to_execute <component>`, the work in its child), two shards at once."""

from __future__ import annotations

import sys
import textwrap

from imagelingo.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import dag_profile  # noqa: E402

# Like kfp.local: tasks started from the run's process, each `sh -c` running a python that does
# the work; `b'x' * n` writes every byte, so the memory is resident.
RUN = textwrap.dedent(
    """
    import json, subprocess, sys, time
    def task(name, mib, seconds):
        code = f"import time; b = b'x' * ({mib} * 2**20); time.sleep({seconds})"
        script = f'"{sys.executable}" -c "$1"'
        command = ["sh", "-c", script, "sh", code, "--function_to_execute", name]
        started = time.monotonic()  # before the fork: the task's whole life is inside
        return subprocess.Popen(command), started
    shards = [task("features", 20, 0.8), task("features", 20, 0.8)]
    for shard, _ in shards:
        shard.wait()
    time.sleep(0.3)
    train, started = task("train", 300, 1.2)
    train.wait()
    with open(sys.argv[1], "w") as out:  # the truth, to compare with
        json.dump({"train_seconds": time.monotonic() - started}, out)
    """
)


def test_each_task_gets_its_wall_time_and_peak_memory(tmp_path):
    import json

    truth = tmp_path / "truth.json"
    command = [sys.executable, "-c", RUN, str(truth)]
    run = dag_profile.profile(command, env=None, interval=0.05)
    rows = {row["task"]: row for row in run["tasks"]}
    assert list(rows) == ["features #1", "features #2", "train"], rows
    first, second, train = rows.values()
    # the shards ran at once; train after both
    assert abs(first["start_s"] - second["start_s"]) < 0.5
    assert train["start_s"] >= first["start_s"] + first["seconds"]
    measured = json.loads(truth.read_text())["train_seconds"]
    # short by at most the longest gap between samples, /proc's 10 ms start-time ticks and the
    # fork before and the wait after the task that `measured` includes
    low = measured - run["resolution_s"] - 0.1
    assert low <= train["seconds"] <= measured + 0.02, (train, measured, run["resolution_s"])
    assert run["resolution_s"] < 0.5
    assert 300 <= train["peak_rss_mib"] < 360, train  # the 300 MiB it wrote, plus Python
    assert first["peak_rss_mib"] < 100 and second["peak_rss_mib"] < 100
    assert run["seconds"] >= train["start_s"] + train["seconds"] - 0.01  # each rounded to 10 ms


def test_a_failed_run_is_an_error():
    import pytest

    with pytest.raises(SystemExit, match="exit code 3"):
        dag_profile.profile([sys.executable, "-c", "raise SystemExit(3)"], env=None)
