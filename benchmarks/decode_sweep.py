"""Decoding settings chosen on DEV: every metric at each beam width x length penalty, for one model.

    python benchmarks/decode_sweep.py --model runs/f8k/model --features runs/f8k/features \
        --dataset runs/f8k/dataset --beams 3 --length-penalties 0,0.3,0.5,0.7,1

evaluate.beam_width and evaluate.length_penalty are chosen here, on the dev split, and only the
chosen pair is then scored on test (`imagelingo evaluate`): picking them by their test scores
would tune on test. The model is loaded once; each setting decodes the whole split with
Captioner.caption_features and is scored by evaluate.score_captions, as evaluate does. Nothing is
written; prints a Markdown table (best CIDEr-D marked) and one JSON line per setting.
"""

from __future__ import annotations

import json
import time

import harness

from imagelingo.evaluate import EvaluateConfig, score_captions, split_features
from imagelingo.inference.captioner import Captioner


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    parser = harness.parser(__doc__, "model", "features", "dataset", required=True)
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    parser.add_argument("--beams", default="3", help="comma-separated beam widths")
    parser.add_argument("--length-penalties", default="0,0.5,1", help="comma-separated")
    args = parser.parse_args()
    captioner = Captioner.load(args.model)
    records, features = split_features(
        captioner, args.model, args.features, args.dataset, args.split
    )
    max_len = EvaluateConfig().max_len
    rows = []
    for beam in (int(b) for b in floats(args.beams)):
        for penalty in floats(args.length_penalties):
            started = time.perf_counter()
            captions = captioner.caption_features(features, beam, max_len, penalty)
            texts = [c.text for c in captions]
            metrics = score_captions(records, texts)
            row = {
                "split": args.split,
                "beam_width": beam,
                "length_penalty": penalty,
                "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 2),
                "seconds": round(time.perf_counter() - started, 1),
                **{k: round(metrics[k], 4) for k in ("bleu4", "coco_bleu4", "meteor", "cider")},
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    best = max(rows, key=lambda r: r["cider"])
    print(f"\n{args.split}, {len(records)} images, model {args.model}\n")
    print("| beam | length_penalty | BLEU-4 nltk | BLEU-4 COCO | METEOR | CIDEr-D | words |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mark = " (best)" if r is best else ""
        print(
            f"| {r['beam_width']} | {r['length_penalty']} | {r['bleu4']:.4f} | "
            f"{r['coco_bleu4']:.4f} | {r['meteor']:.4f} | {r['cider']:.4f}{mark} | "
            f"{r['mean_words']} |"
        )


if __name__ == "__main__":
    main()
