"""Real-data benchmark: ingest -> vocab -> features -> train -> evaluate on a Flickr8k directory.

    python benchmarks/flickr8k_benchmark.py ../shared/flickr8k        # or: make benchmark

Each stage runs as its own `imagelingo` process (exactly what a user runs), so its wall time and
peak memory (max RSS, from wait4) are its own. Appends the command, machine, date, BLEU-1..4 on
the official test split (beam 3, the default, and beam 5), stage times, peak memory, feature
extraction images/s and training captions/s to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def run_stage(name: str, args: list[str], env: dict) -> dict:
    command = [str(Path(sys.executable).parent / "imagelingo"), *args]
    print(f"== {name}: {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"stage {name} failed with exit code {process.returncode}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def evaluate_args(d: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        *extra,
        "--model",
        str(d["model"]),
        "--features",
        str(d["features"]),
        "--dataset",
        str(d["dataset"]),
        "--out",
        str(out),
    ]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory_kib / 2**20:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("flickr8k_dir", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out/flickr8k"))
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        help="parameter override passed to every stage (section.key=value)",
    )
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    params = [a for p in args.param for a in ("-p", p)]
    d = {
        name: work / name
        for name in ("dataset", "vocab", "features", "model", "eval", "eval_beam5")
    }
    started = dt.datetime.now(dt.UTC)
    stages = {
        "ingest": run_stage(
            "ingest",
            [
                *params,
                "ingest",
                str(args.flickr8k_dir.resolve()),
                "--out",
                str(d["dataset"]),
                "--cache",
                str(work / "cache"),
            ],
            env,
        ),
        "vocab": run_stage(
            "vocab",
            [*params, "vocab", "--dataset", str(d["dataset"]), "--out", str(d["vocab"])],
            env,
        ),
        "features": run_stage(
            "features",
            [*params, "features", "--dataset", str(d["dataset"]), "--out", str(d["features"])],
            env,
        ),
        "train": run_stage(
            "train",
            [
                *params,
                "train",
                "--dataset",
                str(d["dataset"]),
                "--vocab",
                str(d["vocab"] / "vocab.json"),
                "--features",
                str(d["features"]),
                "--out",
                str(d["model"]),
            ],
            env,
        ),
        "evaluate": run_stage("evaluate", [*params, *evaluate_args(d, d["eval"])], env),
    }
    total = sum(s["seconds"] for s in stages.values())
    beam5_args = evaluate_args(d, d["eval_beam5"], "--beam-width", "5")
    run_stage("evaluate beam 5", [*params, *beam5_args], env)
    metrics = json.loads((d["eval"] / "metrics.json").read_text())
    metrics5 = json.loads((d["eval_beam5"] / "metrics.json").read_text())
    features = json.loads((d["features"] / "metadata.json").read_text())
    trained = json.loads((d["model"] / "metadata.json").read_text())
    history = trained["history"]
    captions_per_s = sum(h["captions_per_second"] for h in history) / len(history)

    bleu = " | ".join(f"{metrics[k]:.4f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4"))
    bleu5 = " | ".join(f"{metrics5[k]:.4f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4"))
    rows = "\n".join(
        f"| {name} | {s['seconds']:.0f} | {s['peak_rss_mib']} |" for name, s in stages.items()
    )
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    section = f"""
## Flickr8k end to end, {started:%Y-%m-%d %H:%M} UTC

- command: `{command}`
- machine: {machine()}
- code: {trained.get("code_version")}; encoder {features["encoder"]["name"]};
  params overrides: {args.param or "none (params.yaml defaults)"}
- ingest -> evaluate wall time: **{total / 60:.1f} min**

| test split (1,000 images, 5 refs) | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 |
|---|---|---|---|---|
| beam 3 (default) | {bleu} |
| beam 5 | {bleu5} |

| stage | wall s | peak RSS MiB |
|---|---|---|
{rows}

- feature extraction: {features["images_per_second"]} images/s
- training: {captions_per_s:.0f} captions/s (mean over {len(history)} epochs), best epoch
  {trained["best_epoch"]} (greedy dev BLEU-4 {trained["best_val_bleu4"]:.4f})
- dev BLEU-4 per epoch: {", ".join(f"{h['val_bleu4']:.4f}" for h in history)}
"""
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Benchmark results\n\nMeasured numbers, newest last. Each section "
            "names the command that produced it.\n"
        )
    with open(RESULTS, "a") as handle:
        handle.write(section)
    print(section)


if __name__ == "__main__":
    main()
