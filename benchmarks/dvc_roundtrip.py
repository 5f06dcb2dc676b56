"""The real Flickr8k copy through DVC and an S3 API, bit for bit (a few minutes; not a test).

    python benchmarks/dvc_roundtrip.py ../shared/flickr8k

Starts moto's S3 server on 127.0.0.1, then in a scratch git repo with this repo's .dvc/config:
`dvc add data/flickr8k` (its md5 must equal data/flickr8k.dvc's), `dvc push -r s3`, a fresh
`git clone`, `dvc pull -r s3`, and every file compared by sha256 with the source. Appends the
outcome and timings to benchmarks/RESULTS.md. tests/test_dvc.py does the same on synthetic data.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import harness
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "src"))

from imagelingo.data.flickr8k import sha256_of  # noqa: E402
from imagelingo.serving.torchserve import free_port  # noqa: E402


def run(*command: str, cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)


def wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def sha256_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def roundtrip(source: Path, work: Path, endpoint: str) -> dict:
    dvc, timings = str(BIN / "dvc"), {}
    origin, clone = work / "origin", work / "clone"
    origin.mkdir()
    for command in (["git", "init", "-q"], [dvc, "init", "-q"]):
        run(*command, cwd=origin)
    shutil.copy(REPO / ".dvc" / "config", origin / ".dvc" / "config")
    shutil.copytree(source, origin / "data" / "flickr8k")
    started = time.perf_counter()
    run(dvc, "add", "-q", "data/flickr8k", cwd=origin)
    timings["add"] = time.perf_counter() - started
    pointer = yaml.safe_load((origin / "data" / "flickr8k.dvc").read_text())["outs"][0]
    committed = yaml.safe_load((REPO / "data" / "flickr8k.dvc").read_text())["outs"][0]
    run(dvc, "remote", "modify", "--local", "s3", "endpointurl", endpoint, cwd=origin)
    started = time.perf_counter()
    run(dvc, "push", "-q", "-r", "s3", cwd=origin)
    timings["push"] = time.perf_counter() - started
    run("git", "add", "-A", cwd=origin)
    run("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "data", cwd=origin)
    run("git", "clone", "-q", str(origin), str(clone), cwd=work)
    run(dvc, "remote", "modify", "--local", "s3", "endpointurl", endpoint, cwd=clone)
    started = time.perf_counter()
    run(dvc, "pull", "-q", "-r", "s3", cwd=clone)
    timings["pull"] = time.perf_counter() - started
    expected, pulled = sha256_tree(source), sha256_tree(clone / "data" / "flickr8k")
    return {
        "files": len(expected),
        "bytes": sum(p.stat().st_size for p in source.rglob("*") if p.is_file()),
        "identical": expected == pulled,
        "md5": pointer["md5"],
        "md5_matches_committed_pointer": pointer["md5"] == committed["md5"],
        "timings": timings,
    }


def main() -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("flickr8k_dir", type=Path)
    harness.add_results(parser)
    args = parser.parse_args()
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    moto = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 30)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="imagelingo-data")
        with tempfile.TemporaryDirectory() as work:
            result = roundtrip(args.flickr8k_dir.resolve(), Path(work), endpoint)
    finally:
        moto.terminate()
    print(result)
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    t = result["timings"]
    harness.append_section(
        harness.heading("DVC round trip of Flickr8k through S3 (moto)")
        + f"\n- command: `{harness.command()}`\n"
        f"- machine: {harness.machine()}; code {commit}\n"
        f"- {result['files']:,} files, {result['bytes'] / 2**20:.0f} MiB: "
        f"dvc add {t['add']:.0f} s, push {t['push']:.0f} s, pull into a fresh clone "
        f"{t['pull']:.0f} s\n"
        f"- every file identical by sha256: **{result['identical']}**; directory md5 "
        f"`{result['md5']}` equals data/flickr8k.dvc's: "
        f"**{result['md5_matches_committed_pointer']}**\n",
        args.results,
    )
    return 0 if result["identical"] and result["md5_matches_committed_pointer"] else 1


if __name__ == "__main__":
    sys.exit(main())
