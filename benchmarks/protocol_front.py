"""What the protocol front costs: TorchServe behind the pod's PID 1 (pod_front.py: the Open
Inference Protocol's health, metadata and binary data) against TorchServe alone and against the
kserve predictor (the other way to speak the protocol), at 8 clients.

    python benchmarks/protocol_front.py --model runs/f8k/model --images ../shared/flickr8k

The same packaged store (params.yaml's `package`), one Flickr8k test JPEG per KServe v1 request
on 127.0.0.1, as benchmarks/serving_benchmark.py measures. They are started in turn, in
alternating order over `--rounds` rounds (a shared 2-core machine drifts: one round each would
compare the drift), and the seed-style baseline is measured in the same run. Reports each
round and the medians; appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from serving_benchmark import (  # noqa: E402
    DEFAULT_MODEL,
    load_test,
    seed_baseline_call,
    served_call,
    test_images,
)

# the options measured: TorchServe behind the front (the default runtime now), TorchServe alone
# (the default before, without the protocol's routes), the kserve predictor as the default
VARIANTS = {
    "TorchServe + front (default)": "torchserve",
    "TorchServe alone": "torchserve-direct",
    "kserve predictor": "kserve",
}


def main() -> None:
    parser = harness.parser(__doc__, "model", "images", model=DEFAULT_MODEL)
    harness.add_results(parser)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=144)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), metavar="NAME"
    )
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants}

    from imagelingo.config import load_params
    from imagelingo.serving.local import local_server
    from imagelingo.serving.package import ServingConfig, package_model

    images = test_images(args.images, 48)
    rounds: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="imagelingo-front-bench-") as tmp:
        store = Path(tmp) / "store"
        package_model(args.model, store, ServingConfig(**load_params()["package"]))
        for number in range(args.rounds):
            order = list(variants) if number % 2 == 0 else list(reversed(variants))
            for name in order:
                workdir = Path(tmp) / f"{variants[name]}-{number}"
                with local_server(variants[name], store, workdir) as server:
                    call = served_call(server.url)
                    load_test(call, images, 16, args.concurrency)  # warm-up, not counted
                    result = load_test(call, images, args.requests, args.concurrency)
                rounds[name].append(result)
                print(number, name, json.dumps(result), flush=True)
    words = statistics.mean(r["mean_words"] for results in rounds.values() for r in results)
    vocab_size = len(json.loads((args.model / "vocab.json").read_text())["words"])
    baseline = load_test(
        seed_baseline_call(vocab_size, round(words) + 1, beam_width=3),
        images,
        max(16, args.requests // 4),
        args.concurrency,
    )
    print("baseline", json.dumps(baseline), flush=True)
    write_results(args, rounds, baseline)


def write_results(args, rounds: dict[str, list[dict]], baseline: dict) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[name])

    per_round = {
        name: " / ".join(f"{r['images_per_s']:.1f}" for r in results)
        for name, results in rounds.items()
    }
    rows = [
        f"| {name} | {per_round[name]} | "
        f"{median(name, 'images_per_s'):.2f} | {median(name, 'p50_ms'):.0f} | "
        f"{median(name, 'p95_ms'):.0f} | "
        f"{median(name, 'images_per_s') / baseline['images_per_s']:.1f}x |"
        for name, results in rounds.items()
    ]
    alone = median("TorchServe alone", "images_per_s") if "TorchServe alone" in rounds else None
    against = ", ".join(
        f"{name} {100 * (median(name, 'images_per_s') / alone - 1):+.1f}%"
        for name in rounds
        if alone and name != "TorchServe alone"
    )
    section = f"""{harness.heading("The protocol front's cost")}
- command: `{harness.command()}`
- machine: {harness.machine()}
- model: `{args.model}`; one Flickr8k test JPEG per KServe v1 request on 127.0.0.1,
  {args.concurrency} clients, {args.requests} requests per round after 16 unmeasured;
  {args.rounds} rounds, order alternating; the same packaged store (params.yaml `package`)
- seed-style baseline (serving_benchmark.py's), same run: {baseline["images_per_s"]:.2f} images/s

| runtime | images/s per round | median images/s | median p50 ms | median p95 ms | vs baseline |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Median throughput against TorchServe alone: {against or "-"}.
"""
    harness.append_section(section, args.results)


if __name__ == "__main__":
    main()
