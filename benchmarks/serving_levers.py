"""Serving levers one at a time: TorchServe throughput and latency for packagings of the same model
that differ in one setting of params.yaml's `package` section (workers x threads, precision).

    python benchmarks/serving_levers.py --model runs/f8k/model --images ../shared/flickr8k

Prints one line per variant and concurrency; timing only (serving_benchmark.py scores the served
test BLEU-4 of the default and of fp32 in the same run). Numbers: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from serving_benchmark import load_test, served_call, test_images  # noqa: E402


def variants(base) -> dict:
    """params.yaml's packaging, and each alternative that was measured against it."""
    return {
        "params.yaml": base,
        "2 workers x 1 thread": dataclasses.replace(
            base, min_workers=2, max_workers=2, torch_threads=1
        ),
        "fp32 encoder": dataclasses.replace(base, encoder_precision="fp32"),
        "fp32 decoder": dataclasses.replace(base, decoder_precision="fp32"),
        "batch 16, 40 ms": dataclasses.replace(base, batch_size=16, max_batch_delay_ms=40),
    }


def main() -> None:
    parser = harness.parser(__doc__, "model", "images")
    parser.add_argument("--requests", type=int, default=96)
    args = parser.parse_args()

    from imagelingo.config import load_params
    from imagelingo.serving.local import local_server
    from imagelingo.serving.package import ServingConfig, package_model

    images = test_images(args.images, 48)
    base = ServingConfig(**load_params()["package"])
    with tempfile.TemporaryDirectory(prefix="imagelingo-levers-") as tmp:
        for index, (name, config) in enumerate(variants(base).items()):
            store = Path(tmp) / f"store-{index}"
            package_model(args.model, store, config)
            with local_server("torchserve", store, Path(tmp) / f"work-{index}") as server:
                for concurrency in (1, 8):
                    requests = args.requests if concurrency > 1 else args.requests // 3
                    r = load_test(served_call(server.url), images, requests, concurrency)
                    print(
                        f"{name:24} c={concurrency}  {r['images_per_s']:6.1f} images/s  "
                        f"p50 {r['p50_ms']:4.0f} ms  p95 {r['p95_ms']:4.0f} ms",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
