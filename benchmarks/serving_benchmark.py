"""Serving speed: per-image latency (p50, p95) and throughput with concurrent clients, for
TorchServe and the kserve predictor, next to a seed-style baseline measured in the same run.

    python benchmarks/serving_benchmark.py                      # or: make benchmark-serving
    python benchmarks/serving_benchmark.py --model DIR --images DIR --requests 96

Every request carries one Flickr8k test image (JPEG, about 500x375) over the KServe v1 REST
endpoint on 127.0.0.1, from `--concurrency` client threads. The servers are the packaged model
store as `imagelingo serve` runs it (batch size and delay from params.yaml's `package` section).

The baseline is what the usual tutorial/seed code does, in-process (no HTTP, which only favours
it): a ResNet-101 encoder at 256x256, one image at a time, then beam search for that image alone,
behind one lock the way a single unbatched worker serves concurrent clients. Its weights are
random (timing only), so its decoder rarely says <end>: it decodes exactly as many steps as the
served captions have words on average (measured first), so both do the same decoding work.
Appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from imagelingo.serving.client import caption_remote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flickr8k_benchmark import RESULTS, machine  # noqa: E402

DEFAULT_MODEL = Path("benchmarks/out/flickr8k/model")
DEFAULT_IMAGES = Path("../shared/flickr8k")


def test_images(flickr8k: Path, count: int) -> list[bytes]:
    from imagelingo.data.flickr8k import locate_layout

    layout = locate_layout(flickr8k)
    names = layout.split_files["test"].read_text().split()[:count]
    return [(layout.image_dir / name).read_bytes() for name in names]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_test(call, images: list[bytes], requests: int, concurrency: int) -> dict:
    """`requests` calls of `call(image)` from `concurrency` threads: latency and throughput."""
    latencies: list[float] = []

    def one(i: int) -> int:
        started = time.perf_counter()
        words = call(images[i % len(images)])
        latencies.append(time.perf_counter() - started)
        return words

    call(images[0])  # warm-up: first-request costs are not steady state
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        words = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - started
    return {
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "images_per_s": requests / elapsed,
        "mean_words": statistics.mean(words),
    }


def served_call(url: str):
    def call(image: bytes) -> int:
        return len(caption_remote(url, [image])[0]["tokens"])

    return call


def seed_baseline_call(vocab_size: int, decode_steps: int, beam_width: int):
    """ResNet-101 at 256x256 + the same decoder shape, one image and its own beam at a time."""
    import torchvision
    from PIL import Image
    from torch import nn

    from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig, beam_search
    from imagelingo.inference.preprocess import to_pixels

    torch.manual_seed(0)
    resnet = torchvision.models.resnet101(weights=None)
    encoder = nn.Sequential(*list(resnet.children())[:-2]).eval()
    decoder = CaptionDecoder(DecoderConfig(vocab_size=vocab_size, feature_dim=2048)).eval()
    lock = threading.Lock()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    @torch.inference_mode()
    def call(image_bytes: bytes) -> int:
        with lock:  # one unbatched worker
            with Image.open(io.BytesIO(image_bytes)) as image:
                pixels = to_pixels(image, 256, mean, std).unsqueeze(0)
            grid = encoder(pixels).flatten(2).transpose(1, 2)
            # end_id=-1: never stops early, so it decodes exactly `decode_steps` words
            beam_search(decoder, grid, beam_width, decode_steps, start_id=1, end_id=-1)
            return decode_steps

    return call


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="trained model dir")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Flickr8k directory")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runtimes", nargs="+", default=["torchserve", "kserve"])
    args = parser.parse_args()

    from imagelingo.config import load_params
    from imagelingo.serving.local import local_server
    from imagelingo.serving.package import ServingConfig, package_model

    images = test_images(args.images, 48)
    config = ServingConfig(**load_params()["package"])
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="imagelingo-serving-bench-") as tmp:
        store = Path(tmp) / "store"
        package_model(args.model, store, config)
        for runtime in args.runtimes:
            with local_server(runtime, store, Path(tmp) / runtime) as server:
                results[runtime] = {
                    c: load_test(served_call(server.url), images, args.requests, c)
                    for c in args.concurrency
                }
                print(runtime, json.dumps(results[runtime], indent=1), flush=True)
    served_words = statistics.mean(
        r["mean_words"] for by_c in results.values() for r in by_c.values()
    )
    vocab_size = len(json.loads((args.model / "vocab.json").read_text())["words"])
    baseline_call = seed_baseline_call(vocab_size, round(served_words) + 1, beam_width=3)
    baseline_requests = max(16, args.requests // 4)  # it is slow; fewer requests, same clients
    results["seed-style baseline"] = {
        c: load_test(baseline_call, images, baseline_requests, c) for c in args.concurrency
    }
    print("baseline", json.dumps(results["seed-style baseline"], indent=1), flush=True)
    write_results(args, results, config, served_words, vocab_size)


def write_results(args, results: dict, config, served_words: float, vocab_size: int) -> None:
    top = max(args.concurrency)
    baseline = results["seed-style baseline"][top]["images_per_s"]
    rows = []
    for name, by_concurrency in results.items():
        for concurrency, r in by_concurrency.items():
            speedup = (
                r["images_per_s"] / results["seed-style baseline"][concurrency]["images_per_s"]
            )
            rows.append(
                f"| {name} | {concurrency} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                f"{r['images_per_s']:.2f} | {speedup:.1f}x |"
            )
    goal = {
        name: by_c[top]["images_per_s"] / baseline
        for name, by_c in results.items()
        if name != "seed-style baseline"
    }
    section = f"""
## Serving latency and throughput, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC

- command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`
- machine: {machine()}
- model: `{args.model}` (vocab {vocab_size}); one Flickr8k test JPEG per request, KServe v1
  over HTTP on 127.0.0.1; beam 3; TorchServe batchSize {config.batch_size},
  maxBatchDelay {config.max_batch_delay_ms} ms, {config.max_workers} worker(s)
- seed-style baseline: ResNet-101 at 256x256 (random weights), one image at a time, beam search
  per image, in-process behind one lock, {round(served_words) + 1} decoding steps (the served
  captions' mean length {served_words:.1f} words, plus <end>)

| runtime | clients | p50 ms | p95 ms | images/s | vs baseline |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Throughput at concurrency {top} against the baseline (goal: 5x):
{", ".join(f"{name} {ratio:.1f}x" for name, ratio in goal.items())}.
"""
    with open(RESULTS, "a") as handle:
        handle.write(section)
    print(section)


if __name__ == "__main__":
    main()
