"""The runtime rehearsal: the model store `imagelingo package` writes, served as KServe 0.20 serves
it, in the runtime's own Python 3.9 environment (.venv-kfs, from requirements.txt beside this
file), then probed with good and bad KServe v1/v2 requests. `make runtime-rehearsal` runs it.

Three rounds, each started exactly as on a cluster:

- stock-v1, stock-v2: KServe's `kserve-torchserve` ClusterServingRuntime (pytorch/torchserve-kfs
  :0.9.0). Its container args (read from the cluster-reference copy of kserve-torchserve.yaml)
  go to the image's dockerd-entrypoint.sh, which `eval`s them (TorchServe daemonises) and then
  runs `python /home/model-server/kserve_wrapper/__main__.py`: the pytorch/serve v0.9.0 wrapper,
  copied unmodified, with gRPC stubs generated from inference.proto as the image's Dockerfile
  does. Environment as KServe sets it: PROTOCOL_VERSION v1 | v2, TS_SERVICE_ENVELOPE kserve |
  kservev2.
- pod-knative, pod-standard: the project's `imagelingo-torchserve` runtime as the pod the real
  KServe controller built for it (pod.py: the Pod box/kserve/capture-pods.sh captured from the
  box for manifests/overlays/minio-standard, KServe --kserve, default v0.15.2 = Kubeflow 1.11;
  only the substitutions pod.SUBSTITUTIONS lists; Knative mode: KServe's captured Knative
  Service + the pod mutator's injection, Knative's part from reading), run as a kubelet runs it
  (kubelet.py): the storage-initializer downloads the store from moto on 127.0.0.1 with KServe
  0.15.2's storage code (.venv-storage), then the runtime container runs as PID 1 of its own
  PID namespace as uid 1000 with /mnt/models read-only, its exec readiness probe polled, and
  SIGTERM ends it. Nothing of the Standard pod is written in the rehearsal.

Files beside this one: common.py (paths, names), inputs.py (environment, wrapper, model, probe
images), probes.py (requests and cases), stock.py (the stock rounds), pod.py + kubelet.py +
podround.py (the pod rounds), report.py (verdicts, markdown).

Every round runs in a private network namespace (only a loopback interface) and a private mount
namespace in which the packaged store is bind-mounted read-only at /mnt/models, as the storage
initializer leaves it. Why: the wrapper reads /mnt/models/config/config.properties (a constant in
its __main__.py) and binds 0.0.0.0:8080 (HTTP) and [::]:8081 (gRPC) with no way to choose
(kserve 0.11's ModelServer); TorchServe's gRPC ports bind all interfaces in 0.9.0. In the
namespaces all of that is exactly as on the pod, yet reachable from nowhere else, never clashes
with another server on this machine, and /mnt/models of the host is not touched.
Needs root, or unprivileged user namespaces (`unshare --user --map-root-user`).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import podround  # beside this file: the pod-faithful rounds (pod.py, kubelet.py)
from common import MOUNT, REPO, log
from inputs import (
    choose_model,
    kfs_versions,
    mix_images,
    prepare_wrapper,
    probe_images,
    stock_runtime_args,
)
from probes import cases, listeners, request
from report import render, verdicts
from stock import run_round, setup_namespace


def run_outside(args: argparse.Namespace) -> int:
    started = time.monotonic()
    work = args.work.resolve()
    kfs_python = args.kfs_venv.resolve() / "bin" / "python"
    if not kfs_python.is_file():
        raise SystemExit(f"{kfs_python} missing: run `make runtime-rehearsal` (builds the venv)")
    if shutil.which("java") is None:
        raise SystemExit("TorchServe needs Java 17+ on PATH")
    work.mkdir(parents=True, exist_ok=True)
    timings = {}
    home = work / "home"  # /home/model-server of the image
    wrapper = prepare_wrapper(kfs_python, home)
    model, model_note = choose_model(args.model, work)
    t = time.monotonic()
    store = work / "models"  # what the storage initializer copies into /mnt/models
    shutil.rmtree(store, ignore_errors=True)
    imagelingo = Path(sys.executable).parent / "imagelingo"
    subprocess.run(
        [str(imagelingo), "package", "--model", str(model), "--out", str(store)], check=True
    )
    timings["package_s"] = round(time.monotonic() - t, 1)
    images, images_note = probe_images(work)
    mixes, mixes_note = mix_images()
    plan = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": os.environ.get("REHEARSAL_COMMAND")
        or " ".join([".venv/bin/python", "serving/kfs-runtime/rehearse.py", *args.argv]),
        "versions": kfs_versions(kfs_python),
        "wrapper": wrapper,
        "model": model_note,
        "images": images_note,
        "stock_args": stock_runtime_args(),
        "storage_venv": str(args.storage_venv.resolve()),
        "store": str(store),
        "home": str(home),
        "kfs_venv": str(args.kfs_venv.resolve()),
        "images_b64": [base64.b64encode(i).decode() for i in images],
        "mix_images": mixes_note,
        "mix_images_b64": [base64.b64encode(i).decode() for i in mixes],
        "rounds": args.rounds,
        "kserve": args.kserve,
        "timings": timings,
    }
    (work / "plan.json").write_text(json.dumps(plan))
    unshare = ["unshare", "--net", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare[1:1] = ["--user", "--map-root-user"]
    inside = [*unshare, sys.executable, __file__, "--inside", "--work", str(work)]
    result = subprocess.run(inside)
    if result.returncode != 0:
        raise SystemExit(f"rehearsal rounds failed (exit {result.returncode}); logs in {work}")
    report = json.loads((work / "result.json").read_text())
    report["timings"]["total_s"] = round(time.monotonic() - started, 1)
    markdown = render(report)
    (work / "result.md").write_text(markdown)
    (work / "result.json").write_text(json.dumps(report, indent=1))
    print(markdown)
    log(f"written {work / 'result.md'}")
    return 0 if report["ok"] else 1


def run_inside(work: Path) -> int:
    plan = json.loads((work / "plan.json").read_text())
    setup_namespace(Path(plan["store"]))
    with open(MOUNT / "config" / "config.properties") as f:  # what the wrapper reads
        assert "model_snapshot" in f.read()
    report = {key: plan[key] for key in plan if not key.endswith("images_b64")}
    report["rounds"] = []
    ok = True
    for name in plan["rounds"]:
        log(f"round {name}")
        try:
            if name.startswith("pod-"):
                mode = {"pod-knative": "Knative", "pod-standard": "Standard"}[name]
                pod_round = podround.run_pod_round(mode, plan, work, cases, request, listeners)
                report["rounds"].append(pod_round)
            else:
                report["rounds"].append(run_round(name, plan, work))
        except Exception as exc:  # record it and go on with the next round
            log(f"round {name} failed: {exc}")
            report["rounds"].append({"name": name, "error": str(exc)})
            ok = False
    report["ok"] = ok and all(verdicts(r)["ok"] for r in report["rounds"] if "probes" in r)
    for r in report["rounds"]:
        if "probes" in r:
            r["verdict"] = verdicts(r)
    (work / "result.json").write_text(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runtime-rehearsal")
    parser.add_argument("--kfs-venv", type=Path, default=REPO / ".venv-kfs")
    parser.add_argument("--model", type=Path, help="trained model dir (default: runs/*/model)")
    parser.add_argument("--storage-venv", type=Path, default=REPO / ".venv-storage")
    parser.add_argument(
        "--rounds", nargs="+", default=["stock-v1", "stock-v2", "pod-knative", "pod-standard"]
    )
    parser.add_argument(
        "--kserve",
        default=podround.podspec.KSERVE,
        help="whose captured pod the pod rounds run (box/kserve/observed/<kserve>-*)",
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.inside:
        return run_inside(args.work)
    return run_outside(args)


if __name__ == "__main__":
    sys.exit(main())
