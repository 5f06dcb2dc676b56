"""Seconds per SCST batch on real features, with a cross-entropy batch of as many captions timed
in the same run as the baseline.

    OMP_NUM_THREADS=1 python benchmarks/scst_speed.py --model runs/f8k/model \
        --features runs/f8k/features --dataset runs/f8k/dataset --batches 5

One SCST batch (params.yaml train.scst_batch_size images x train.scst_samples samples): sample
with the decoder's softmax, score each sample's CIDEr-D, backward and an Adam step, as
imagelingo.scst does. The baseline: a teacher-forced CE batch of the same number of captions
(each image's references), as imagelingo.train does. Nothing is written: the model folder is
only read. Prints one JSON line per phase.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.nn.utils import clip_grad_norm_

from imagelingo.cider import CiderD
from imagelingo.data.dataset import load_records
from imagelingo.data.text import tokenize
from imagelingo.features import FeatureStore
from imagelingo.inference.captioner import Captioner
from imagelingo.loss import caption_loss
from imagelingo.scst import sample_captions, self_critical_loss
from imagelingo.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--batches", type=int, default=5)
    args = parser.parse_args()
    config = TrainConfig()
    captioner = Captioner.load(args.model)
    decoder, vocab = captioner.decoder.train(), captioner.vocab
    store = FeatureStore(args.features, "train")
    records = load_records(args.dataset, "train")
    refs = [[tokenize(c) for c in r.captions] for r in records]
    started = time.perf_counter()
    cider = CiderD(refs)
    vectors = [cider.references(r) for r in refs]
    setup = time.perf_counter() - started
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.scst_lr)
    k, size = config.scst_samples, config.scst_batch_size
    torch.manual_seed(config.seed)
    times = {"scst": [], "cross_entropy": []}
    for b in range(args.batches):
        images = list(range(b * size, (b + 1) * size))
        features = store.tensor([store.row[records[i].image] for i in images])
        t0 = time.perf_counter()
        words, log_prob = sample_captions(decoder, features, k, config.val_max_len, vocab)
        captions = [vocab.decode(ids) for ids in words.tolist()]
        rewards = torch.tensor(
            [cider.score(c, vectors[images[j // k]]) for j, c in enumerate(captions)]
        )
        loss, _ = self_critical_loss(rewards, log_prob, k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        times["scst"].append(time.perf_counter() - t0)
        # the baseline: teacher forcing on as many captions (each image's references)
        pairs = sorted(
            ((i, vocab.encode(r[: config.max_caption_len])) for i in images for r in refs[i][:k]),
            key=lambda p: -len(p[1]),
        )
        lengths = torch.tensor([len(ids) for _, ids in pairs])
        targets = torch.zeros(len(pairs), int(lengths[0]), dtype=torch.long)
        for row, (_, ids) in enumerate(pairs):
            targets[row, : len(ids)] = torch.tensor(ids)
        rows = [store.row[records[i].image] for i, _ in pairs]
        t0 = time.perf_counter()
        scores, flat, attention = decoder(store.tensor(rows), targets, lengths)
        ce_loss, _ = caption_loss(scores, flat, attention, config.alpha_c)
        optimizer.zero_grad(set_to_none=True)
        ce_loss.backward()
        clip_grad_norm_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        times["cross_entropy"].append(time.perf_counter() - t0)
    for phase, seconds in times.items():
        steady = seconds[1:] or seconds  # the first batch warms up allocators
        print(
            json.dumps(
                {
                    "phase": phase,
                    "captions_per_batch": size * k,
                    "seconds_per_batch": round(sum(steady) / len(steady), 3),
                    "all": [round(s, 3) for s in seconds],
                    "threads": torch.get_num_threads(),
                    **({"cider_setup_seconds": round(setup, 2)} if phase == "scst" else {}),
                }
            )
        )


if __name__ == "__main__":
    main()
