"""Feature extraction speed: where the images/s go, and what `imagelingo features` gets.

    python benchmarks/features_speed.py grid --dataset runs/f8k/dataset --images 800
    python benchmarks/features_speed.py compare --dataset runs/f8k/dataset --images 800 \
        --a-source /tmp/features_before.py --b ''   # before vs params.yaml, alternating

`grid` times the extraction loop (the library's image dataset, DataLoader and encoder, no writes)
for DataLoader workers x torch threads x channels_last x bf16 autocast, in rounds that alternate
the variants so a neighbour's load on this shared machine hits them all alike; it prints the
median images/s of each and how far its fp16 grids are from fp32's (max and mean absolute
difference, cosine). `compare` runs the real `extract_features` on the same subset with two
settings (`--b ''`: params.yaml's), alternating, and prints each run's images/s. The subset is
the first N train images of the ingested dataset (a copy of its captions.jsonl and a link to its
images under a temporary folder; nothing is written next to the dataset).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness
import torch
from torch.utils.data import DataLoader

from imagelingo.data.dataset import load_records
from imagelingo.encoders import build_encoder
from imagelingo.features import FeaturesConfig, _ImageFiles


def subset(dataset: Path, images: int, where: Path) -> Path:
    """A dataset folder with the first `images` train records (all splits kept tiny)."""
    records = load_records(dataset, "train")[:images]
    out = where / "dataset"
    out.mkdir()
    (out / "images").symlink_to(Path(dataset, "images").resolve())
    with open(out / "captions.jsonl", "w") as handle:
        for i, r in enumerate(records):
            split = "train" if i >= 8 else ("dev" if i < 4 else "test")
            handle.write(json.dumps({"image": r.image, "split": split, "captions": r.captions}))
            handle.write("\n")
    return out


def encode(paths, encoder, model, spec, workers, threads, channels_last, bf16, batch_size):
    torch.set_num_threads(threads or os.cpu_count())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = DataLoader(_ImageFiles(paths, spec), batch_size=batch_size, num_workers=workers)
    grids = []
    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
        for batch in loader:
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            grids.append(model(batch).to(torch.float16))
    seconds = time.perf_counter() - started
    model.to(memory_format=torch.contiguous_format)
    return len(paths) / seconds, torch.cat(grids)


def grid(args) -> None:
    records = load_records(args.dataset, "train")[: args.images]
    paths = [Path(args.dataset, "images", r.image) for r in records]
    model, spec = build_encoder(args.encoder)
    variants = [
        dict(workers=w, threads=t, channels_last=cl, bf16=bf)
        for w, t, cl, bf in itertools.product(
            args.workers, args.threads, args.channels_last, args.bf16
        )
    ]
    speeds = {i: [] for i in range(len(variants))}
    reference, outputs = None, {}
    for round_ in range(args.rounds):
        order = range(len(variants)) if round_ % 2 == 0 else reversed(range(len(variants)))
        for i in order:
            v = variants[i]
            speed, grids = encode(paths, args.encoder, model, spec, batch_size=args.batch_size, **v)
            speeds[i].append(speed)
            outputs[i] = grids[:64].float()
            print(f"round {round_} {v}: {speed:.1f} images/s", flush=True)
    # the reference: plain fp32 if it ran, else the first variant without bf16 (or the first)
    plain = [i for i, v in enumerate(variants) if not v["bf16"] and not v["channels_last"]]
    fp32 = plain or [i for i, v in enumerate(variants) if not v["bf16"]] or [0]
    reference = outputs[fp32[0]]
    print(
        f"\n{args.encoder}, {args.images} images, batch {args.batch_size}, "
        f"load before: {os.getloadavg()}"
    )
    print(
        "| workers | threads | channels_last | bf16 | images/s (median) | runs | "
        "max abs diff | mean abs diff | cosine |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for i, v in enumerate(variants):
        out = outputs[i]
        diff = (out - reference).abs()
        cosine = torch.nn.functional.cosine_similarity(out.flatten(1), reference.flatten(1)).min()
        runs = ", ".join(f"{s:.1f}" for s in speeds[i])
        print(
            f"| {v['workers']} | {v['threads']} | {v['channels_last']} | {v['bf16']} | "
            f"{statistics.median(speeds[i]):.1f} | {runs} | {diff.max():.4f} | "
            f"{diff.mean():.5f} | {cosine:.5f} |"
        )


def parse_settings(text: str, config_class=FeaturesConfig) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        field_type = {f.name: f.type for f in dataclasses.fields(config_class)}[key]
        out[key] = int(value) if field_type == "int" else value
    return out


def features_module(source: Path | None):
    """imagelingo.features, or another version of it (e.g. `git show REV:src/imagelingo/features.py`
    saved to a file: the code before a change, timed in the same run as the change)."""
    if source is None:
        import imagelingo.features

        return imagelingo.features
    import importlib.util

    name = f"features_{abs(hash(str(source)))}"
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def compare(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args.dataset, args.images, Path(tmp))
        modules = {"a": features_module(args.a_source), "b": features_module(args.b_source)}
        configs = {
            k: modules[k].FeaturesConfig(**parse_settings(text, modules[k].FeaturesConfig))
            for k, text in (("a", args.a), ("b", args.b))
        }
        speeds = {k: [] for k in configs}
        for round_ in range(args.rounds):
            for name in ("a", "b") if round_ % 2 == 0 else ("b", "a"):
                out = Path(tmp, f"{name}{round_}")
                record = modules[name].extract_features(data, out, configs[name])
                speeds[name].append(record["images_per_second"])
                print(
                    f"round {round_} {name} {configs[name]}: "
                    f"{record['images_per_second']} images/s",
                    flush=True,
                )
        for name, config in configs.items():
            runs = ", ".join(str(s) for s in speeds[name])
            source = getattr(args, f"{name}_source") or "imagelingo.features"
            print(
                f"{name}: {source} {config}: median {statistics.median(speeds[name])} images/s "
                f"({runs}); load average now {os.getloadavg()}"
            )


def main() -> None:
    parser = harness.parser(__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("grid")
    c = sub.add_parser("compare")
    for p in (g, c):
        harness.add_inputs(p, "dataset")
        p.add_argument("--images", type=int, default=800)
        p.add_argument("--rounds", type=int, default=2)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    g.add_argument("--encoder", default="efficientnet_lite0")
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--workers", type=ints, default=[0, 1, 2])
    g.add_argument("--threads", type=ints, default=[1, 2])
    g.add_argument("--channels-last", type=ints, default=[0])
    g.add_argument("--bf16", type=ints, default=[0])
    c.add_argument("--a", default="", help="key=value,... of params.yaml's features section")
    c.add_argument("--b", default="")
    c.add_argument("--a-source", type=Path, help="a features.py to run a with (default: this one)")
    c.add_argument("--b-source", type=Path)
    args = parser.parse_args()
    grid(args) if args.mode == "grid" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
