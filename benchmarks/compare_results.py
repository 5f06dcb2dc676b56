"""How sure is a CIDEr-D difference? A paired bootstrap over the images of two results files.

    python benchmarks/compare_results.py --dataset runs/f8k/dataset \
        old/captions.json new/captions.json [--split test] [--resamples 10000]

Each file is evaluate's captions.json (one {"image", "caption"} per image of the split), or any
model's captions in that form. Each image's CIDEr-D comes from metrics.cider_per_image (the
coco-caption code, the idf from the whole split's references: the mean is the `cider` evaluate
reports). The images are resampled with replacement, the same draw for both files, and each
file's mean and the difference B - A are recomputed per draw. Prints each file's CIDEr-D with its
95% interval, the difference with its 95% interval, and the share of draws where B does not beat
A. The idf stays that of the full split in every draw: the usual approximation, since resampling
it would change what the score measures.

On Flickr8k's 1,000 test images, a model's CIDEr-D is known to about +-0.04 (95%), and the
difference of two similar models to about +-0.01: smaller changes cannot be told from which
images happen to be in the split (RESULTS.md, "How sure a CIDEr-D difference is").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from imagelingo.data.dataset import load_records
from imagelingo.evaluate import read_results
from imagelingo.metrics import cider_per_image


def interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_a", type=Path, help="the baseline's captions.json")
    parser.add_argument("results_b", type=Path, help="the candidate's captions.json")
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="test", choices=("dev", "test"))
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    records = load_records(args.dataset, args.split)
    references = {r.image: r.captions for r in records}
    scores = []
    for path in (args.results_a, args.results_b):
        captions = read_results(path, records, args.split)
        scores.append(np.array(cider_per_image(references, {k: captions[k] for k in references})))
    a, b = scores
    draws = np.random.default_rng(args.seed).integers(0, len(a), (args.resamples, len(a)))
    mean_a, mean_b = a[draws].mean(axis=1), b[draws].mean(axis=1)
    diff = mean_b - mean_a
    row = {
        "split": args.split,
        "images": len(a),
        "resamples": args.resamples,
        "a": str(args.results_a),
        "b": str(args.results_b),
        "cider_a": round(float(a.mean()), 4),
        "cider_a_95": [round(x, 4) for x in interval(mean_a)],
        "cider_b": round(float(b.mean()), 4),
        "cider_b_95": [round(x, 4) for x in interval(mean_b)],
        "b_minus_a": round(float(b.mean() - a.mean()), 4),
        "b_minus_a_95": [round(x, 4) for x in interval(diff)],
        "share_b_not_better": round(float((diff <= 0).mean()), 4),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
