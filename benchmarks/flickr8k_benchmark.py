"""Real-data benchmark: ingest -> vocab -> features -> train -> evaluate on a Flickr8k directory.

    python benchmarks/flickr8k_benchmark.py ../shared/flickr8k        # or: make benchmark

Each stage runs as its own `imagelingo` process (exactly what a user runs), so its wall time and
peak memory (max RSS, from wait4: the largest of the process and the Java programs it waited
for, the PTB tokenizer and METEOR) are its own. Then the test split is scored at beam 1, 3 and 5
for the cross-entropy model and, when training ran SCST (train.scst_epochs > 0: the final model
in model/, the cross-entropy phase's best in model/cross_entropy/), for the SCST model too.
Appends the command, machine, date, every metric of each evaluation (the COCO caption metrics
BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, and nltk BLEU-4 as earlier results reported it), stage
times, peak memory, feature extraction images/s and training captions/s to benchmarks/RESULTS.md,
with the 95% interval of the test CIDEr-D at the default beam (a paired bootstrap over the test
images, as benchmarks/compare_results.py computes it): how much of a difference is the split's.

Then, in the same run, the path users run: the whole DAG through `imagelingo run` (kfp.local,
every task a subprocess, the feature shards side by side), with the same settings (params.yaml
plus the -p overrides, written to <workdir>/dag/params.yaml) on the same data; each task's wall
time and peak RSS (benchmarks/dag_profile.py: sampled from /proc) go beside the in-process
figures (--no-dag skips it).

A check on tiny data (minutes), written elsewhere than RESULTS.md:

    python -c "from imagelingo.data.synthetic import generate_synthetic as g; g('/tmp/syn', 60)"
    python benchmarks/flickr8k_benchmark.py /tmp/syn --workdir /tmp/bench --results /tmp/bench.md \
        -p train.epochs=1 -p vocab.min_freq=1
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import harness

BEAMS = (1, 3, 5)
DEFAULT_BEAM = 3  # params.yaml's evaluate.beam_width: the pipeline's evaluate
# (metrics.json key, column) in the results table; spice joins when it ran
COLUMNS = [
    ("coco_bleu1", "BLEU-1"),
    ("coco_bleu4", "BLEU-4"),
    ("meteor", "METEOR"),
    ("rouge_l", "ROUGE-L"),
    ("cider", "CIDEr-D"),
    ("bleu4", "BLEU-4 (nltk)"),
]


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


def cider_intervals(work: Path, model_names: list[str], dataset: Path) -> str:
    """How sure the test CIDEr-D at the default beam is: each model's 95% interval from a paired
    bootstrap over the test images, and the difference of the final model from the other."""
    from imagelingo.evaluate import bootstrap_cider, results_cider

    files = [work / f"eval-{name}-beam{DEFAULT_BEAM}" / "captions.json" for name in model_names]
    stats = bootstrap_cider(results_cider(files, dataset))
    parts = [
        f"{name} {score:.4f} [{low:.4f}, {high:.4f}]"
        for name, score, (low, high) in zip(
            model_names, stats["cider"], stats["cider_95"], strict=True
        )
    ]
    for name, score, (low, high) in zip(
        model_names[1:], stats["cider"][1:], stats["minus_first_95"], strict=True
    ):
        gain = stats["cider"][0] - score  # the final model's gain over this one
        parts.append(f"{model_names[0]} - {name} {gain:+.4f} [{-high:+.4f}, {-low:+.4f}]")
    return (
        f"test CIDEr-D at beam {DEFAULT_BEAM} with its 95% interval over the test images "
        "(paired bootstrap, 10,000 draws; benchmarks/compare_results.py): " + "; ".join(parts)
    )


def run_dag(source: Path, work: Path, overrides: list[str], env: dict) -> dict:
    """`imagelingo run` on `source` with params.yaml + `overrides` (the pipeline reads its
    constants and its parameters' defaults from IMAGELINGO_PARAMS); its own cache folder, so its
    ingest does the work the in-process one did."""
    import yaml
    from dag_profile import profile

    from imagelingo.config import apply_overrides, load_params

    dag = work / "dag"
    dag.mkdir(parents=True, exist_ok=True)
    params_file = dag / "params.yaml"
    params_file.write_text(yaml.safe_dump(apply_overrides(load_params(), overrides)))
    command = [
        str(Path(sys.executable).parent / "imagelingo"),
        "run",
        "--source",
        str(source),
        "--pipeline-root",
        str(dag / "root"),
    ]
    print(f"== the DAG (kfp.local): {shlex.join(command)}", flush=True)
    dag_env = {**env, "IMAGELINGO_PARAMS": str(params_file), "IMAGELINGO_CACHE": str(dag / "cache")}
    return profile(command, dag_env)


def dag_section(dag: dict, stages: dict, images: int) -> str:
    """The DAG's tasks beside the in-process stages, and the shards' joint speed."""
    rows = []
    for task in dag["tasks"]:
        alone = stages.get(task["component"])
        beside = f"{alone['seconds']:.0f} | {alone['peak_rss_mib']}" if alone else "- | -"
        rows.append(
            f"| {task['task']} | {task['start_s']:.0f} | {task['seconds']:.0f} | "
            f"{task['peak_rss_mib']} | {beside} |"
        )
    shards = [t for t in dag["tasks"] if t["component"] == "features"]
    span = max(t["start_s"] + t["seconds"] for t in shards) - min(t["start_s"] for t in shards)
    return f"""
The same settings, as the whole DAG through `imagelingo run` (kfp.local: each task a
subprocess; {len(shards)} feature shard(s) side by side on {os.cpu_count()} cores):
**{dag["seconds"] / 60:.1f} min** from start to end. Per task, sampled from /proc
(benchmarks/dag_profile.py; wall times short by at most {dag["resolution_s"]} s), beside the
same stage run alone in one process above:

| task | starts at s | wall s | peak RSS MiB | alone: wall s | alone: peak RSS MiB |
|---|---|---|---|---|---|
{chr(10).join(rows)}

- feature extraction in the DAG: {images / span:.1f} images/s over its {len(shards)} shard(s)
  together ({images:,} images in {span:.0f} s, task start to task end)
"""


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("flickr8k_dir", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("benchmarks/out/flickr8k"))
    harness.add_results(parser)
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        help="parameter override passed to every stage (section.key=value)",
    )
    parser.add_argument(
        "--no-dag", action="store_true", help="skip the run of the DAG through `imagelingo run`"
    )
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    params = [a for p in args.param for a in ("-p", p)]
    d = {name: work / name for name in ("dataset", "vocab", "features", "model")}
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
    }
    # The final model first, at the default beam: that evaluation is the pipeline's evaluate stage.
    models = {"cross-entropy": d["model"]}
    if (d["model"] / "cross_entropy").is_dir():  # SCST ran: model/ is its result
        models = {"SCST": d["model"], "cross-entropy": d["model"] / "cross_entropy"}
    evaluations = {}
    for model_name, model_dir in models.items():
        for beam in sorted(BEAMS, key=lambda b: b != DEFAULT_BEAM):
            out = work / f"eval-{model_name}-beam{beam}"
            name = f"evaluate {model_name} beam {beam}"
            beam_args = evaluate_args({**d, "model": model_dir}, out, "--beam-width", str(beam))
            evaluations[(model_name, beam)] = {
                **run_stage(name, [*params, *beam_args], env),
                "metrics": json.loads((out / "metrics.json").read_text()),
            }
    final = next(iter(models))
    stages["evaluate"] = {
        k: evaluations[(final, DEFAULT_BEAM)][k] for k in ("seconds", "peak_rss_mib")
    }
    sampling = cider_intervals(work, list(models), d["dataset"])
    dag = None if args.no_dag else run_dag(args.flickr8k_dir.resolve(), work, args.param, env)
    total = sum(s["seconds"] for s in stages.values())
    features = json.loads((d["features"] / "metadata.json").read_text())
    trained = json.loads((d["model"] / "metadata.json").read_text())
    history = trained["history"]
    speeds = [h["captions_per_second"] for h in history if "captions_per_second" in h]
    captions_per_s = sum(speeds) / max(len(speeds), 1)

    columns = COLUMNS + (
        [("spice", "SPICE")] if all("spice" in e["metrics"] for e in evaluations.values()) else []
    )
    test_images = evaluations[(final, DEFAULT_BEAM)]["metrics"]["images"]
    scores = "\n".join(
        f"| {model_name} | {beam} | "
        + " | ".join(f"{e['metrics'][key]:.4f}" for key, _ in columns)
        + f" | {e['seconds']:.0f} | {e['peak_rss_mib']} |"
        for model_name in models
        for beam, e in sorted((b, evaluations[(model_name, b)]) for b in BEAMS)
    )
    rows = "\n".join(
        f"| {name} | {s['seconds']:.0f} | {s['peak_rss_mib']} |" for name, s in stages.items()
    )
    best = (
        f"(greedy dev BLEU-4 {trained['best_val_bleu4']:.4f})"
        if "best_val_bleu4" in trained
        else ""
    )
    section = f"""{harness.heading("Flickr8k end to end", started)}
- command: `{harness.command()}`
- machine: {harness.machine()}
- code: {trained.get("code_version")}; encoder {features["encoder"]["name"]};
  params overrides: {args.param or "none (params.yaml defaults)"}
- ingest -> evaluate (beam {DEFAULT_BEAM}, {final} model) wall time: **{total / 60:.1f} min**

Test split ({test_images:,} images, all references). BLEU-1/4, METEOR, ROUGE-L and CIDEr-D (0-10)
are the COCO caption metrics (pycocoevalcap, PTB tokens); BLEU-4 (nltk) is the score earlier
sections report (our tokens).

| model | beam | {" | ".join(label for _, label in columns)} | wall s | peak RSS MiB |
|---|---|{"---|" * len(columns)}---|---|
{scores}

| stage | wall s | peak RSS MiB |
|---|---|---|
{rows}

- feature extraction: {features["images_per_second"]} images/s
- training: {captions_per_s:.0f} captions/s (mean over {len(speeds)} epochs), best epoch
  {trained.get("best_epoch")} {best}
- dev BLEU-4 per epoch: {", ".join(f"{h['val_bleu4']:.4f}" for h in history if "val_bleu4" in h)}
- {sampling}
"""
    if dag is not None:
        images = sum(split["images"] for split in features["counts"].values())
        section += dag_section(dag, stages, images)
    harness.append_section(section, args.results)


if __name__ == "__main__":
    main()
