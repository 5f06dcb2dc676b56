"""Training memory against feature store size: peak RSS of `train` on a store and on a store k
times larger, with each way of reading the store.

    python benchmarks/feature_memory.py make --features runs/f8k/features \
        --dataset runs/f8k/dataset --copies 1 --out /tmp/fm/x1
    python benchmarks/feature_memory.py make ... --copies 4 --out /tmp/fm/x4
    python benchmarks/feature_memory.py measure --vocab runs/f8k/vocab/vocab.json \
        --stores /tmp/fm/x1 /tmp/fm/x4 --batches 40

`make` writes a store (and a captions.jsonl to match) holding every row of the given one `copies`
times, the copies under new image names, so the same training sees k times the images. `measure`
runs each (store, reader) in a fresh process and prints its peak RSS (VmHWM) as a table:

- `train`: the real `imagelingo.train.train` for one epoch cut to its first `--batches` batches
  (its batch generator is wrapped; nothing else changes), the whole dev split validated.
- `scan`: every train row read once in training-sized batches, no decoder: the reads of a full
  epoch, fast, so the readers' growth over an epoch shows.

Readers: `pread` (FeatureStore's default: rows read when asked for), `memmap` (rows gathered from
np.load(mmap_mode="r")), `in_memory` (the whole split loaded, FeatureStore(in_memory=True): the
default before issue 14).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
import numpy as np

READERS = ("pread", "memmap", "in_memory")
MODES = ("train", "scan")


def make(features: Path, dataset: Path, copies: int, out: Path) -> None:
    from imagelingo.data.dataset import SPLITS, load_records

    (out / "features").mkdir(parents=True)
    (out / "dataset").mkdir()
    renamed = lambda rep, name: name if rep == 0 else f"r{rep}_{name}"  # noqa: E731
    with open(out / "dataset" / "captions.jsonl", "w") as handle:
        for rep in range(copies):
            for r in load_records(dataset):
                record = {"image": renamed(rep, r.image), "split": r.split, "captions": r.captions}
                handle.write(json.dumps(record) + "\n")
    progress = {}
    for split in SPLITS:
        source = np.load(features / f"{split}.npy", mmap_mode="r")
        names = json.loads((features / f"{split}.index.json").read_text())
        target = np.lib.format.open_memmap(
            out / "features" / f"{split}.npy",
            mode="w+",
            dtype=source.dtype,
            shape=(copies * len(source), *source.shape[1:]),
        )
        for rep in range(copies):
            for start in range(0, len(source), 500):
                stop = min(start + 500, len(source))
                target[rep * len(source) + start : rep * len(source) + stop] = source[start:stop]
        target.flush()
        del target
        all_names = [renamed(rep, n) for rep in range(copies) for n in names]
        (out / "features" / f"{split}.index.json").write_text(json.dumps(all_names))
        progress[split] = {"key": "copies", "rows": len(all_names)}
    (out / "features" / "progress.json").write_text(json.dumps(progress))
    for name in ("encoder.json", "metadata.json"):
        shutil.copy(features / name, out / "features" / name)
    print(f"{out}: {copies} x {features}")


class _MemmapStore:
    """FeatureStore whose batches are gathered from the memory map (the alternative to pread)."""

    def __init__(self, *args, **kwargs):
        from imagelingo.features import FeatureStore

        self._store = FeatureStore(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)

    def __len__(self):
        return len(self._store)

    def tensor(self, rows):
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        return torch.from_numpy(np.asarray(self._store.array[rows], dtype=np.float32))

    def lazy(self, rows):
        from imagelingo.features import LazyRows

        return LazyRows(self, rows)


def store_class(reader: str):
    import functools

    from imagelingo.features import FeatureStore

    if reader == "pread":
        return FeatureStore
    if reader == "in_memory":
        return functools.partial(FeatureStore, in_memory=True)
    return _MemmapStore


def peak_rss_mib() -> dict:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    mib = lambda key: round(int(status[key].split()[0]) / 1024)  # noqa: E731
    return {"peak_rss_mib": mib("VmHWM"), "rss_anon_mib": mib("RssAnon")}


def run_one(args) -> None:
    """In a fresh process: one (store, reader, mode); prints a JSON line."""
    import torch

    store, make_store = Path(args.store).resolve(), store_class(args.reader)
    vocab = Path(args.vocab).resolve()  # before the chdir below
    torch.set_num_threads(1)
    started = time.perf_counter()
    if args.mode == "scan":
        train = make_store(store / "features", "train")
        dev = make_store(store / "features", "dev")
        order = np.random.default_rng(0).permutation(len(train))
        for start in range(0, len(order), 64):
            train.tensor(order[start : start + 64])
        for start in range(0, len(dev), 500):
            dev.lazy(range(len(dev)))[start : start + 500]
        rows = len(train)
    else:
        import imagelingo.train as training

        full = training._batches

        def first_batches(*a, **kw):
            for i, batch in enumerate(full(*a, **kw)):
                if i == args.batches:
                    return
                yield batch

        training._batches = first_batches
        training.FeatureStore = make_store
        with tempfile.TemporaryDirectory() as out:
            os.chdir(out)  # MLflow's default sqlite store lands here
            training.train(
                dataset_dir=store / "dataset",
                vocab_path=vocab,
                features_dir=store / "features",
                out_dir=Path(out) / "model",
                config=training.TrainConfig(epochs=1),
            )
        rows = len(json.loads((store / "features" / "train.index.json").read_text()))
    record = {"store": str(store), "train_rows": rows, "reader": args.reader, "mode": args.mode}
    record.update(peak_rss_mib(), seconds=round(time.perf_counter() - started, 1))
    print(json.dumps(record), flush=True)


def measure(args) -> None:
    results = []
    for mode in args.modes:
        for store in args.stores:
            for reader in args.readers:
                command = [sys.executable, __file__, "one", "--store", str(store)]
                command += ["--reader", reader, "--mode", mode, "--vocab", str(args.vocab)]
                command += ["--batches", str(args.batches)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    sys.exit(f"{command} failed:\n{done.stderr[-3000:]}")
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(results[-1], flush=True)
    print(f"\nload average at the end: {os.getloadavg()}")
    print("| mode | train rows | reader | peak RSS MiB | RssAnon at end MiB | seconds |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['mode']} | {r['train_rows']} | {r['reader']} | {r['peak_rss_mib']} | "
            f"{r['rss_anon_mib']} | {r['seconds']} |"
        )


def main() -> None:
    parser = harness.parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    harness.add_inputs(m, "features", "dataset")
    m.add_argument("--copies", type=int, required=True)
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("measure")
    r.add_argument("--stores", type=Path, nargs="+", required=True)
    r.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS))
    r.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    o = sub.add_parser("one")
    o.add_argument("--store", type=Path, required=True)
    o.add_argument("--reader", choices=READERS, required=True)
    o.add_argument("--mode", choices=MODES, required=True)
    for p in (r, o):
        harness.add_inputs(p, "vocab")
        p.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    if args.command == "make":
        make(args.features, args.dataset, args.copies, args.out)
    elif args.command == "measure":
        measure(args)
    else:
        run_one(args)


if __name__ == "__main__":
    main()
