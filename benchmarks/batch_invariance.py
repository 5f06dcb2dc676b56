"""Does a served caption depend on its batch, and what does batch invariance cost? (issue 30)

    python benchmarks/batch_invariance.py --model runs/f8k/model --images ../shared/flickr8k

Served, for two versions of the code: `--baseline REF` (default: the commit before issue 30, whose
int8 decoder used torch's per-call activation scale and whose encoder ran one pass per batch),
checked out into a git worktree, and this checkout. Each version packages the same model as
params.yaml says (`imagelingo package`, int8 decoder) and serves it with each local runtime
(`imagelingo serve`, its own code on PYTHONPATH); this script, the client, measures over HTTP:

- consistency: `--sample` Flickr8k test images alone vs in random batch mixes, 3 rounds
  (imagelingo.serving.consistency): answers with other tokens, the largest score difference;
- speed: images/s, p50 and p95 at 1 and 8 clients, one test JPEG per request
  (serving_benchmark.load_test);
- quality: test BLEU-4 of all 1,000 Flickr8k test images captioned over HTTP, 8 clients.

This checkout's all-fp32 packaging is served too (TorchServe), the reference the int8 decoder is
held to. In-process, on this checkout's model: the encoder one image per pass against one pass
per batch of 8, and one beam search (8 images, beam 3) with the decoder per-tensor int8 (torch's
quantize_dynamic, the baseline), per-row int8 and fp32. Appends a section to RESULTS.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from serving_benchmark import (  # noqa: E402
    load_test,
    served_bleu4,
    served_call,
    test_images,
    test_references,
)

from imagelingo.errors import ImageLingoError  # noqa: E402
from imagelingo.serving.client import caption_remote  # noqa: E402
from imagelingo.serving.consistency import check_batch_mixes  # noqa: E402
from imagelingo.serving.torchserve import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINE = "ac72da0"  # main before issue 30
HEADER = (
    "| served | same tokens as alone | max score diff | c=1 images/s | c=1 p50 ms "
    "| c=8 images/s | c=8 p50 / p95 ms | test BLEU-4 |\n|---|---|---|---|---|---|---|---|"
)


@contextlib.contextmanager
def baseline_checkout(ref: str, tmp: Path):
    worktree = tmp / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), ref],
        check=True,
        capture_output=True,
    )
    try:
        yield worktree / "src"
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False
        )


def imagelingo(*args: str) -> list[str]:
    return [sys.executable, "-m", "imagelingo.cli", *args]


def code_env(code: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(code)}


def package(code: Path, model: Path, out: Path, *overrides: str) -> Path:
    command = imagelingo(*overrides, "package", "--model", str(model), "--out", str(out))
    subprocess.run(command, env=code_env(code), check=True, capture_output=True)
    return out


@contextlib.contextmanager
def served(code: Path, runtime: str, store: Path, workdir: Path, probe: bytes):
    """`imagelingo serve` of `code` on a free port; yields its URL once a caption comes back."""
    port = free_port()
    command = imagelingo(
        "-p",
        f"serve.runtime={runtime}",
        "-p",
        f"serve.port={port}",
        "serve",
        str(store),
        "--workdir",
        str(workdir),
    )
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "serve.log", "wb") as log:
        process = subprocess.Popen(
            command,
            env=code_env(code),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not answers(url, probe):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{runtime} of {code} did not start; see {workdir}/serve.log")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def answers(url: str, image: bytes) -> bool:
    try:
        return bool(caption_remote(url, [image]))
    except ImageLingoError:
        return False


def measure_served(url: str, images: list[bytes], sample: list[bytes], test_set) -> dict:
    consistency = check_batch_mixes(url, sample)
    print("  consistency:", consistency.summary(), *consistency.examples, sep="\n    ")
    speed = {c: load_test(served_call(url), images, 96 if c > 1 else 32, c) for c in (1, 8)}
    print("  speed:", json.dumps(speed))
    bleu = served_bleu4(url, *test_set)
    print(f"  test BLEU-4 {bleu:.4f}", flush=True)
    return {"consistency": consistency, "speed": speed, "bleu4": bleu}


def in_process(model: Path, images: list[bytes]) -> dict:
    """The encoder per image vs per batch of 8, and one beam search per decoder precision."""
    import copy

    import torch

    from imagelingo.captioning import load_captioner
    from imagelingo.inference.preprocess import preprocess
    from imagelingo.inference.quantized import RowInt8Decoder
    from imagelingo.serving.images import decode_image

    captioner = load_captioner(model)
    torch.set_num_threads(2)  # params.yaml package.torch_threads
    pixels = torch.stack([preprocess(decode_image(b), captioner.spec) for b in images[:8]])

    encoder = captioner.encoder
    with torch.inference_mode():
        batched = lambda: encoder(pixels.contiguous(memory_format=torch.channels_last))  # noqa: E731
        timings = {
            "encoder, one pass per 8 images": 1000 * harness.best_of(batched),
            "encoder, one pass per image": 1000 * harness.best_of(lambda: captioner.encode(pixels)),
        }
        features = captioner.encode(pixels)
    fp32 = captioner.decoder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_tensor = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(fp32), {torch.nn.Linear, torch.nn.LSTMCell}, dtype=torch.qint8
        )
    per_row = RowInt8Decoder(fp32).eval()
    for name, decoder in [
        ("int8 per tensor (baseline)", per_tensor),
        ("int8 per row", per_row),
        ("fp32", fp32),
    ]:
        captioner.decoder = decoder
        timings[f"beam search, decoder {name}"] = 1000 * harness.best_of(
            lambda: captioner.caption_features(features, beam_width=3, max_len=30)
        )
    return timings


def main() -> None:
    parser = harness.parser(__doc__, "model", "images")
    harness.add_results(parser)
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the code before")
    parser.add_argument("--sample", type=int, default=200, help="test images checked for mixes")
    parser.add_argument("--runtimes", nargs="+", default=["torchserve", "kserve"])
    parser.add_argument(
        "--speed-rounds",
        type=int,
        default=2,
        help="then the baseline and this checkout served in turn (first runtime), this many "
        "times each, timed at 8 clients: the machine's drift falls on both alike",
    )
    parser.add_argument("--speed-only", action="store_true", help="only the rounds in turn")
    args = parser.parse_args()

    images = test_images(args.images, 48)
    test_set = test_references(args.images)
    sample = test_set[0][: args.sample]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="imagelingo-invariance-") as tmp_name:
        tmp = Path(tmp_name)
        with baseline_checkout(args.baseline, tmp) as baseline_src:
            runs = [
                (f"baseline {args.baseline} {runtime}", baseline_src, runtime, ())
                for runtime in args.runtimes
            ]
            runs += [
                (f"this checkout {runtime}", REPO / "src", runtime, ()) for runtime in args.runtimes
            ]
            fp32 = ("-p", "package.decoder_precision=fp32", "-p", "package.encoder_precision=fp32")
            runs.append(
                (f"this checkout {args.runtimes[0]} all-fp32", REPO / "src", args.runtimes[0], fp32)
            )

            def serve(name: str, code: Path, runtime: str, overrides: tuple = ()):
                store = tmp / f"store-{code.parent.name}-{'fp32' if overrides else 'params'}"
                if not store.exists():
                    package(code, args.model.resolve(), store, *overrides)
                return served(code, runtime, store, tmp / name.replace(" ", "-"), images[0])

            for name, code, runtime, overrides in [] if args.speed_only else runs:
                print(f"== {name}", flush=True)
                with serve(name, code, runtime, overrides) as url:
                    results[name] = measure_served(url, images, sample, test_set)
            in_turn = []
            for round_number in range(1, args.speed_rounds + 1):
                for name, code in (("baseline", baseline_src), ("this checkout", REPO / "src")):
                    with serve(name, code, args.runtimes[0]) as url:
                        in_turn.append(
                            (round_number, name, load_test(served_call(url), images, 96, 8))
                        )
                    print(round_number, name, json.dumps(in_turn[-1][2]), flush=True)
    timings = {} if args.speed_only else in_process(args.model, images)
    print(json.dumps(timings, indent=1))
    write_results(args, results, timings, in_turn)


def write_results(args, results: dict, timings: dict, in_turn: list) -> None:
    parts = [
        harness.heading("Batch invariance of served captions (issue 30)"),
        f"- command: `{harness.command()}`",
        f"- machine: {harness.machine()}",
        f"- model: `{args.model}`; each version packaged with params.yaml's `package` section "
        "(int8 decoder; bf16 encoder only where the CPU has native bf16) and served by "
        f"`imagelingo serve` on 127.0.0.1 with that version's code; baseline = `{args.baseline}`",
    ]
    if results:
        parts += [
            f"- consistency: {args.sample} Flickr8k test images, each alone, then in 3 rounds of "
            "random mixes (concurrent requests of 1-4 images, 8 clients, options mixed: default "
            "/ beam 1 / beam 5 with max_len 12): batched answers with the same tokens as alone, "
            "and the largest relative score difference (the bound: identical tokens, 1e-5)",
            "- speed: one test JPEG per request, v1; quality: all 1,000 test images over HTTP, "
            "corpus BLEU-4\n",
            HEADER,
            *(result_row(name, r) for name, r in results.items()),
            "",
            *(
                f"- {name}: {e}"
                for name, r in results.items()
                for e in r["consistency"].examples[:2]
            ),
        ]
    if in_turn:
        parts += [
            f"\nServed in turn, {args.runtimes[0]}, 8 clients, 96 requests each:\n",
            "| round | code | images/s | p50 / p95 ms |\n|---|---|---|---|",
            *(
                f"| {n} | {name} | {r['images_per_s']:.1f} | {r['p50_ms']:.0f} / "
                f"{r['p95_ms']:.0f} |"
                for n, name, r in in_turn
            ),
        ]
    if timings:
        parts += [
            "\nIn-process on the same model (best of 5, 2 torch threads), 8 test images:\n",
            "| work | ms |\n|---|---|",
            *(f"| {name} | {ms:.0f} |" for name, ms in timings.items()),
        ]
    harness.append_section("\n".join(parts) + "\n", args.results)


def result_row(name: str, r: dict) -> str:
    c, s1, s8 = r["consistency"], r["speed"][1], r["speed"][8]
    return (
        f"| {name} | {c.compared - c.token_mismatches}/{c.compared} | "
        f"{c.max_relative_score_diff:.1e} | {s1['images_per_s']:.1f} | {s1['p50_ms']:.0f} | "
        f"{s8['images_per_s']:.1f} | {s8['p50_ms']:.0f} / {s8['p95_ms']:.0f} | {r['bleu4']:.4f} |"
    )


if __name__ == "__main__":
    main()
