"""Soak: each local runtime under steady load for a while; every answer checked, memory watched.

    python benchmarks/soak.py --model runs/f8k/model                  # 10 min per runtime, c=8
    python benchmarks/soak.py --model DIR --minutes 1 --runtimes kserve

`--concurrency` client threads send one Flickr8k test JPEG per KServe v1 request over HTTP on
127.0.0.1, back to back, for `--minutes` per runtime (the runtimes one after the other, so each
has the machine). Every answer must be a 200 with a caption; anything else is counted and named.
The resident memory of the server's whole process tree (TorchServe's Java frontend and its
Python workers; the kserve predictor's process) is sampled every 5 s. Growth is measured from the
end of the warm-up (the first minute, or a fifth of a shorter run: allocator pools and caches
fill there) to the last sample. Appends a section to benchmarks/RESULTS.md; exits 1 when a
runtime had an error or grew by `--max-growth` or more.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from imagelingo.serving.client import caption_remote

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from serving_benchmark import percentile, test_images  # noqa: E402

SAMPLE_EVERY_S = 5.0


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        # a worker may exit between listing and reading
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / 2**20


def soak(url: str, pid: int, images: list[bytes], seconds: float, concurrency: int) -> dict:
    """Load for `seconds`; returns counts, errors by kind, latencies and the memory samples."""
    stop_at = time.monotonic() + seconds
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    memory: list[tuple[float, float]] = []
    started = time.monotonic()

    def client(offset: int) -> None:
        i = offset
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            try:
                caption = caption_remote(url, [images[i % len(images)]])[0]
                ok = bool(caption.get("caption"))
                problem = "" if ok else "empty caption"
            except Exception as exc:  # counted and named, never hidden
                problem = f"{type(exc).__name__}: {str(exc)[:120]}"
            with lock:
                if problem:
                    errors[problem] += 1
                else:
                    latencies.append(time.perf_counter() - began)
            i += concurrency

    def sampler() -> None:
        while time.monotonic() < stop_at:
            memory.append((time.monotonic() - started, tree_rss_mib(pid)))
            time.sleep(SAMPLE_EVERY_S)

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    watcher.join()
    memory.append((time.monotonic() - started, tree_rss_mib(pid)))
    warm_up = min(60.0, seconds / 5)
    after_warm_up = [rss for at, rss in memory if at >= warm_up]
    baseline, final = after_warm_up[0], after_warm_up[-1]
    return {
        "requests": len(latencies) + sum(errors.values()),
        "errors": dict(errors),
        "images_per_s": len(latencies) / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.5) if latencies else float("nan"),
        "p95_ms": 1000 * percentile(latencies, 0.95) if latencies else float("nan"),
        "rss_start_mib": memory[0][1],
        "rss_after_warm_up_mib": baseline,
        "rss_peak_mib": max(rss for _, rss in memory),
        "rss_final_mib": final,
        "growth": (final - baseline) / baseline,
        "warm_up_s": warm_up,
    }


def main() -> int:
    parser = harness.parser(__doc__, "images")
    harness.add_inputs(parser, "model", required=True)
    harness.add_results(parser)
    parser.add_argument("--minutes", type=float, default=10.0, help="per runtime")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--runtimes", nargs="+", default=["torchserve", "kserve"])
    parser.add_argument("--max-growth", type=float, default=0.05, help="RSS growth allowed")
    args = parser.parse_args()

    from imagelingo.config import load_params
    from imagelingo.serving.local import local_server
    from imagelingo.serving.package import ServingConfig, package_model

    images = test_images(args.images, 48)
    results = {}
    with tempfile.TemporaryDirectory(prefix="imagelingo-soak-") as tmp:
        store = Path(tmp) / "store"
        package_model(args.model, store, ServingConfig(**load_params()["package"]))
        for runtime in args.runtimes:
            with local_server(runtime, store, Path(tmp) / runtime) as server:
                caption_remote(server.url, images[:1])  # first request: model warm-up
                print(f"soaking {runtime} for {args.minutes} min", flush=True)
                results[runtime] = soak(
                    server.url, server.process.pid, images, 60 * args.minutes, args.concurrency
                )
                print(runtime, results[runtime], flush=True)
    passed = all(not r["errors"] and r["growth"] < args.max_growth for r in results.values())
    write_results(args, results, passed)
    return 0 if passed else 1


def write_results(args, results: dict, passed: bool) -> None:
    rows = [
        f"| {name} | {r['requests']:,} | {sum(r['errors'].values())} | {r['images_per_s']:.1f} | "
        f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f} | {r['rss_start_mib']:.0f} | "
        f"{r['rss_after_warm_up_mib']:.0f} | {r['rss_peak_mib']:.0f} | {r['rss_final_mib']:.0f} | "
        f"{100 * r['growth']:+.2f}% |"
        for name, r in results.items()
    ]
    errors = {name: r["errors"] for name, r in results.items() if r["errors"]}
    title = f"{args.minutes:g} min per local runtime at concurrency {args.concurrency}"
    columns = ["runtime", "requests", "errors", "images/s", "p50 / p95 ms", "RSS start MiB"]
    columns += ["after warm-up", "peak", "end", "growth"]
    section = f"""{harness.heading(f"Soak: {title}")}
- command: `{harness.command()}`
- machine: {harness.machine()}
- model: `{args.model}`; one Flickr8k test JPEG per KServe v1 request over HTTP on 127.0.0.1,
  beam 3; memory is the RSS of the server's whole process tree, sampled every {SAMPLE_EVERY_S:g} s;
  growth from the end of the warm-up ({next(iter(results.values()))["warm_up_s"]:g} s) to the end

| {" | ".join(columns)} |
{"|---" * len(columns)}|
{chr(10).join(rows)}

Verdict (no error, growth under {100 * args.max_growth:g}%): {"pass" if passed else "FAIL"}.
{f"Errors: {errors}" if errors else ""}
"""
    harness.append_section(section, args.results)


if __name__ == "__main__":
    sys.exit(main())
