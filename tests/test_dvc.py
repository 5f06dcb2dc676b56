"""DVC for real: the repo's dvc.yaml and remotes are valid, and a dataset pushed to an S3 API
(moto's server on 127.0.0.1) and pulled into a fresh clone comes back bit for bit."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from imagelingo.config import REPO_ROOT, load_params
from imagelingo.data.flickr8k import sha256_of

BIN = Path(sys.executable).parent


def run(*command, cwd, env=None):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_dvc_yaml_stages_call_the_cli_with_params_and_metrics():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["ingest", "vocab", "features", "train", "evaluate", "package"]
    params = load_params()
    for name, stage in stages.items():
        assert stage["cmd"].startswith(f"imagelingo {name} "), name
        assert all(section in params for section in stage.get("params", [])), name
    assert "runs/dvc/eval/metrics.json" in stages["evaluate"]["metrics"][0]


def test_push_to_s3_and_pull_into_a_fresh_clone_is_bit_for_bit(
    s3_server, synthetic_source, tmp_path
):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="imagelingo-data")
    dvc = str(BIN / "dvc")
    origin = tmp_path / "origin"
    origin.mkdir()
    run("git", "init", "-q", cwd=origin)
    run("git", "config", "user.email", "t@example.com", cwd=origin)
    run("git", "config", "user.name", "test", cwd=origin)
    run(dvc, "init", "-q", cwd=origin)
    shutil.copy(REPO_ROOT / ".dvc" / "config", origin / ".dvc" / "config")  # the repo's remotes
    run(dvc, "remote", "modify", "s3", "endpointurl", s3_server, cwd=origin)
    shutil.copytree(synthetic_source, origin / "data" / "flickr8k")
    run(dvc, "add", "-q", "data/flickr8k", cwd=origin)
    run("git", "add", "-A", cwd=origin)
    run("git", "commit", "-qm", "data", cwd=origin)
    run(dvc, "push", "-q", "-r", "s3", cwd=origin)

    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(origin), str(clone), cwd=tmp_path)
    assert not (clone / "data" / "flickr8k").exists()
    run(dvc, "pull", "-q", "-r", "s3", cwd=clone)
    assert digests(clone / "data" / "flickr8k") == digests(synthetic_source)
    objects = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket="imagelingo-data")
    assert objects["KeyCount"] > 0


def test_the_raw_dataset_pointer_describes_the_flickr8k_copy():
    from conftest import FLICKR8K

    pointer = yaml.safe_load((REPO_ROOT / "data" / "flickr8k.dvc").read_text())["outs"][0]
    assert pointer["path"] == "flickr8k" and pointer["md5"].endswith(".dir")
    if (FLICKR8K / "Flickr8k.token.txt").is_file():
        assert pointer["nfiles"] == sum(1 for p in FLICKR8K.rglob("*") if p.is_file())
