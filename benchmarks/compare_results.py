"""How sure is a CIDEr-D difference? A paired bootstrap over the images of two results files.

    python benchmarks/compare_results.py --dataset runs/f8k/dataset \
        old/captions.json new/captions.json [--split test] [--resamples 10000]

Each file is evaluate's captions.json (one {"image", "caption"} per image of the split), or any
model's captions in that form. Each image's CIDEr-D comes from the coco-caption code with the
idf from the whole split's references (evaluate.results_cider: their mean is the `cider`
evaluate reports). The images are resampled with replacement, the same draw for both files, and
each file's mean and the difference B - A are recomputed per draw (evaluate.bootstrap_cider).
Prints each file's CIDEr-D with its 95% interval, the difference with its 95% interval, and the
share of draws where B does not beat A. The idf stays that of the full split in every draw: the
usual approximation, since resampling it would change what the score measures.

On Flickr8k's 1,000 test images, a model's CIDEr-D is known to about +-0.04 (95%), and the
difference of two similar models to about +-0.01: smaller changes cannot be told from which
images happen to be in the split (RESULTS.md, "How sure a CIDEr-D difference is").
"""

from __future__ import annotations

import json
from pathlib import Path

import harness

from imagelingo.evaluate import bootstrap_cider, results_cider


def main() -> None:
    parser = harness.parser(__doc__, "dataset", required=True)
    parser.add_argument("results_a", type=Path, help="the baseline's captions.json")
    parser.add_argument("results_b", type=Path, help="the candidate's captions.json")
    parser.add_argument("--split", default="test", choices=("dev", "test"))
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    per_image = results_cider([args.results_a, args.results_b], args.dataset, args.split)
    stats = bootstrap_cider(per_image, args.resamples, args.seed)
    (a, b), (a_95, b_95) = stats["cider"], stats["cider_95"]
    row = {
        "split": args.split,
        "images": len(per_image[0]),
        "resamples": args.resamples,
        "a": str(args.results_a),
        "b": str(args.results_b),
        "cider_a": a,
        "cider_a_95": a_95,
        "cider_b": b,
        "cider_b_95": b_95,
        "b_minus_a": round(b - a, 4),
        "b_minus_a_95": stats["minus_first_95"][0],
        "share_b_not_better": stats["not_higher"][0],
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
