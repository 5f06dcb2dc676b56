"""Seconds per SCST batch on real features, at each train.precision asked for, in one run (the
first precision is the baseline the others are compared with).

    OMP_NUM_THREADS=1 python benchmarks/scst_speed.py --model runs/f8k/model \
        --features runs/f8k/features --dataset runs/f8k/dataset --batches 6 --precision fp32,bf16

One SCST batch (params.yaml train.scst_batch_size images x train.scst_samples samples) is
imagelingo.scst.scst_step: sample with the decoder's softmax under the precision's autocast,
score each sample's CIDEr-D, backward and an Adam step. Each precision starts from the model's
weights and the same seed and takes the same images, alternating batch by batch so a change in
the machine's load hits both. Nothing is written: the model folder is only read. Prints one JSON
line per precision.
"""

from __future__ import annotations

import dataclasses
import json
import time

import harness
import torch

from imagelingo.data.dataset import load_records
from imagelingo.data.text import tokenize
from imagelingo.devices import grad_scaler
from imagelingo.features import FeatureStore
from imagelingo.inference.captioner import Captioner
from imagelingo.scst import reward_cider, scst_step
from imagelingo.train import TrainConfig


def main() -> None:
    parser = harness.parser(__doc__, "model", "features", "dataset", required=True)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--precision", default="fp32,bf16", help="comma-separated, baseline first")
    args = parser.parse_args()
    store = FeatureStore(args.features, "train")
    records = load_records(args.dataset, "train")
    refs = [[tokenize(c) for c in r.captions] for r in records]
    started = time.perf_counter()
    cider, vectors_of = reward_cider(refs)
    setup = time.perf_counter() - started
    runs = {}
    for precision in args.precision.split(","):
        config = dataclasses.replace(TrainConfig(), precision=precision)
        decoder = Captioner.load(args.model).decoder.train()
        optimizer = torch.optim.Adam(decoder.parameters(), lr=config.scst_lr)
        scaler = grad_scaler(torch.device("cpu"), precision)
        runs[precision] = (config, decoder, optimizer, scaler, [])
    vocab = Captioner.load(args.model).vocab
    size = TrainConfig().scst_batch_size
    for b in range(args.batches):
        images = range(b * size, (b + 1) * size)
        features = store.tensor([store.row[records[i].image] for i in images])
        vectors = [vectors_of[i] for i in images]
        for config, decoder, optimizer, scaler, seconds in runs.values():
            torch.manual_seed(config.seed + b)
            t0 = time.perf_counter()
            scst_step(decoder, optimizer, scaler, features, vectors, cider, config, vocab)
            seconds.append(time.perf_counter() - t0)
    baseline = None
    for precision, (config, *_, seconds) in runs.items():
        steady = seconds[1:] or seconds  # the first batch warms up allocators
        per_batch = sum(steady) / len(steady)
        baseline = baseline or per_batch
        print(
            json.dumps(
                {
                    "precision": precision,
                    "captions_per_batch": config.scst_batch_size * config.scst_samples,
                    "seconds_per_batch": round(per_batch, 3),
                    "speedup_vs_first": round(baseline / per_batch, 2),
                    "all": [round(s, 3) for s in seconds],
                    "threads": torch.get_num_threads(),
                    "cider_setup_seconds": round(setup, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
