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
Each speed lever (params.yaml `package`: encoder_precision, decoder_precision) is kept only while
the served Flickr8k test BLEU-4 stays within 0.002 of fp32's: the same model is packaged twice,
as params.yaml says and all-fp32, and both are timed and scored over HTTP (every test image, one
per request) in the same run. Appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import io
import json
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
import harness  # noqa: E402

DEFAULT_MODEL = Path("benchmarks/out/flickr8k/model")  # what `make benchmark` trained


def test_images(flickr8k: Path, count: int) -> list[bytes]:
    from imagelingo.data.flickr8k import locate_layout

    layout = locate_layout(flickr8k)
    names = layout.split_files["test"].read_text().split()[:count]
    return [(layout.image_dir / name).read_bytes() for name in names]


def test_references(flickr8k: Path) -> tuple[list[bytes], list[list[list[str]]]]:
    """Every Flickr8k test image and its tokenized reference captions."""
    from imagelingo.data.flickr8k import locate_layout, parse_token_file
    from imagelingo.data.text import tokenize

    layout = locate_layout(flickr8k)
    captions = parse_token_file(layout.token_file).captions
    names = layout.split_files["test"].read_text().split()
    images = [(layout.image_dir / name).read_bytes() for name in names]
    return images, [[tokenize(c) for c in captions[name]] for name in names]


def served_bleu4(url: str, images: list[bytes], references, concurrency: int = 8) -> float:
    """Test BLEU-4 of the captions the server answers, one image per request."""
    from imagelingo.metrics import bleu_scores

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(lambda image: caption_remote(url, [image])[0], images))
    return bleu_scores(references, [answer["tokens"] for answer in answers])["bleu4"]


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

    from imagelingo.inference.decoder import CaptionDecoder, beam_search
    from imagelingo.inference.preprocess import to_pixels
    from imagelingo.train import TrainConfig, decoder_config

    torch.manual_seed(0)
    resnet = torchvision.models.resnet101(weights=None)
    encoder = nn.Sequential(*list(resnet.children())[:-2]).eval()
    decoder = CaptionDecoder(decoder_config(TrainConfig(), vocab_size, feature_dim=2048)).eval()
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
    parser = harness.parser(__doc__, "model", "images", model=DEFAULT_MODEL)
    harness.add_results(parser)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runtimes", nargs="+", default=["torchserve", "kserve"])
    parser.add_argument("--no-bleu", action="store_true", help="skip the served test BLEU-4")
    args = parser.parse_args()

    from imagelingo.config import load_params
    from imagelingo.serving.local import local_server
    from imagelingo.serving.package import ServingConfig, package_model

    images = test_images(args.images, 48)
    config = ServingConfig(**load_params()["package"])
    fp32 = dataclasses.replace(config, encoder_precision="fp32", decoder_precision="fp32")
    test_set = None if args.no_bleu else test_references(args.images)
    # (name, package settings, runtime): every runtime as params.yaml packages the model, and
    # the default runtime once more all-fp32, the reference each lever is held to
    runs = [(runtime, config, runtime) for runtime in args.runtimes]
    if (config.encoder_precision, config.decoder_precision) != ("fp32", "fp32"):
        runs.append((f"{args.runtimes[0]} fp32", fp32, args.runtimes[0]))
    results: dict[str, dict[int, dict]] = {}
    bleu: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="imagelingo-serving-bench-") as tmp:
        for name, settings, runtime in runs:
            store = Path(tmp) / f"store-{settings.encoder_precision}-{settings.decoder_precision}"
            if not store.exists():
                package_model(args.model, store, settings)
            with local_server(runtime, store, Path(tmp) / name.replace(" ", "-")) as server:
                results[name] = {
                    c: load_test(served_call(server.url), images, args.requests, c)
                    for c in args.concurrency
                }
                if test_set is not None:
                    bleu[name] = served_bleu4(server.url, *test_set)
                print(name, json.dumps(results[name], indent=1), bleu.get(name), flush=True)
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
    write_results(args, results, config, served_words, vocab_size, bleu)


def write_results(
    args, results: dict, config, served_words: float, vocab_size: int, bleu: dict[str, float]
) -> None:
    top = max(args.concurrency)
    baseline = results["seed-style baseline"][top]["images_per_s"]
    rows = []
    for name, by_concurrency in results.items():
        for concurrency, r in by_concurrency.items():
            speedup = (
                r["images_per_s"] / results["seed-style baseline"][concurrency]["images_per_s"]
            )
            score = f"{bleu[name]:.4f}" if name in bleu else "-"
            rows.append(
                f"| {name} | {concurrency} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                f"{r['images_per_s']:.2f} | {speedup:.1f}x | {score} |"
            )
    goal = {
        name: by_c[top]["images_per_s"] / baseline
        for name, by_c in results.items()
        if name != "seed-style baseline"
    }
    section = f"""{harness.heading("Serving latency and throughput")}
- command: `{harness.command()}`
- machine: {harness.machine()}
- model: `{args.model}` (vocab {vocab_size}); one Flickr8k test JPEG per request, KServe v1
  over HTTP on 127.0.0.1; beam 3; TorchServe batchSize {config.batch_size},
  maxBatchDelay {config.max_batch_delay_ms} ms, {config.max_workers} worker(s) x
  {config.torch_threads} torch threads; encoder {config.encoder_precision}, decoder
  {config.decoder_precision} ("fp32": the same model packaged all-fp32, in the same run)
- test BLEU-4: every Flickr8k test image captioned over HTTP (one per request), corpus BLEU-4
  against its 5 references (imagelingo.metrics); a lever stays only within 0.002 of fp32
- seed-style baseline: ResNet-101 at 256x256 (random weights), one image at a time, beam search
  per image, in-process behind one lock, {round(served_words) + 1} decoding steps (the served
  captions' mean length {served_words:.1f} words, plus <end>)

| runtime | clients | p50 ms | p95 ms | images/s | vs baseline | test BLEU-4 |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Throughput at concurrency {top} against the baseline (goal: 65 images/s and 10x):
{", ".join(f"{name} {ratio:.1f}x" for name, ratio in goal.items())}.
"""
    harness.append_section(section, args.results)


if __name__ == "__main__":
    main()
