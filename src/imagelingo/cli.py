"""`imagelingo` command line: one subcommand per stage, plus `demo` and `caption`.

    imagelingo ingest ../shared/flickr8k --out runs/flickr8k/dataset
    imagelingo vocab    --dataset runs/flickr8k/dataset --out runs/flickr8k/vocab
    imagelingo features --dataset runs/flickr8k/dataset --out runs/flickr8k/features
    imagelingo train    --dataset ... --vocab ... --features ... --out runs/flickr8k/model
    imagelingo evaluate --model ... --features ... --dataset ... --out runs/flickr8k/eval
    imagelingo demo     # every stage on generated data, a few minutes on 2 CPU cores

Defaults come from params.yaml; override any with `-p section.key=value`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from imagelingo.config import apply_overrides, load_params
from imagelingo.errors import ImageLingoError, QualityGateError

DEFAULT_CACHE = Path(os.environ.get("IMAGELINGO_CACHE", Path.home() / ".cache" / "imagelingo"))


def _train_config(params: dict):
    from imagelingo.train import TrainConfig

    return TrainConfig(**params["train"])


def run_ingest(args, params: dict) -> dict:
    from imagelingo.ingest import ingest

    return ingest(
        args.source,
        args.out,
        args.cache,
        params["ingest"]["synthetic_images"],
        params["ingest"]["seed"],
        args.s3_endpoint_url,
        args.strict,
    )


def run_vocab(args, params: dict) -> dict:
    from imagelingo.data.vocab import build_vocab_stage

    return build_vocab_stage(args.dataset, args.out, params["vocab"]["min_freq"])


def run_features(args, params: dict) -> dict:
    from imagelingo.features import extract_features

    p = params["features"]
    return extract_features(
        args.dataset,
        args.out,
        p["encoder"],
        args.encoder_weights,
        p["batch_size"],
        p["num_workers"],
    )


def run_train(args, params: dict) -> dict:
    from imagelingo.train import train

    return train(
        args.dataset, args.vocab, args.features, args.out, _train_config(params), resume=args.resume
    )


def run_evaluate(args, params: dict) -> dict:
    from imagelingo.evaluate import evaluate

    p = params["evaluate"]
    return evaluate(
        args.model,
        args.features,
        args.dataset,
        args.out,
        p["beam_width"],
        p["max_len"],
        p["length_penalty"],
        p["min_bleu4"],
        p["report_samples"],
    )


def run_caption(args, params: dict) -> dict:
    from imagelingo.captioner import caption_image_files

    p = params["evaluate"]
    captions = caption_image_files(args.model, args.images, p["beam_width"], p["max_len"])
    for path, caption in zip(args.images, captions, strict=True):
        print(f"{path}\t{caption.text}")
    return {}


def run_demo(args, params: dict) -> dict:
    """Every stage on the synthetic dataset, then BLEU and a caption for a test image."""
    from imagelingo.captioner import caption_image_files
    from imagelingo.data.dataset import load_records

    work = Path(args.workdir)
    steps = argparse.Namespace(
        source="synthetic",
        cache=args.cache,
        s3_endpoint_url=None,
        strict=True,
        dataset=work / "dataset",
        vocab=work / "vocab" / "vocab.json",
        features=work / "features",
        model=work / "model",
        encoder_weights=None,
        resume=False,
    )
    for stage, runner, out in (
        ("ingest", run_ingest, steps.dataset),
        ("vocab", run_vocab, work / "vocab"),
        ("features", run_features, steps.features),
        ("train", run_train, steps.model),
        ("evaluate", run_evaluate, work / "eval"),
    ):
        print(f"== {stage}", flush=True)
        steps.out = out
        runner(steps, params)
    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    print(
        "test BLEU: "
        + "  ".join(f"{k.upper()} {metrics[k]:.3f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4"))
    )
    sample = load_records(steps.dataset, "test")[0]
    image = steps.dataset / "images" / sample.image
    caption = caption_image_files(steps.model, [image], params["evaluate"]["beam_width"])[0]
    print(f"caption for {image}: {caption.text!r}  (a reference: {sample.captions[0]!r})")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagelingo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=Path, help="params file (default: ./params.yaml)")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one parameter, e.g. -p train.epochs=5",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="Flickr8k source -> validated dataset directory")
    p.add_argument(
        "source",
        help="Flickr8k directory | flickr8k | http(s) URL(s) | s3://bucket/prefix | synthetic",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="downloads and generated data")
    p.add_argument("--s3-endpoint-url", help="S3 API endpoint (MinIO); default AWS_ENDPOINT_URL")
    p.add_argument("--strict", action="store_true", help="fail on the first undecodable image")
    p.set_defaults(run=run_ingest)

    p = sub.add_parser("vocab", help="build the vocabulary from TRAIN captions")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=run_vocab)

    p = sub.add_parser("features", help="encode every image into the feature store")
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--encoder", help="efficientnet_lite0 (default) | resnet50 | resnet101")
    p.add_argument("--encoder-weights", type=Path, help="local weights file for the encoder")
    p.set_defaults(run=run_features)

    p = sub.add_parser("train", help="train the attention LSTM decoder")
    for name in ("dataset", "vocab", "features", "out"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue from out/checkpoint.pt")
    p.set_defaults(run=run_train)

    p = sub.add_parser("evaluate", help="BLEU-1..4 on the test split, report, quality gate")
    for name in ("model", "features", "dataset", "out"):
        p.add_argument(f"--{name}", type=Path, required=True)
    p.add_argument("--beam-width", type=int)
    p.add_argument("--min-bleu4", type=float, help="quality gate")
    p.set_defaults(run=run_evaluate)

    p = sub.add_parser("caption", help="caption image files with a trained model")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--model", type=Path, required=True)
    p.set_defaults(run=run_caption)

    p = sub.add_parser("demo", help="all stages on generated data; prints BLEU and a caption")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.set_defaults(run=run_demo)
    return parser


def _shorthand_overrides(args) -> dict:
    """Flags that are shorthand for a parameter (--encoder, --beam-width, --min-bleu4)."""
    shorthand = {
        "encoder": "features.encoder",
        "beam_width": "evaluate.beam_width",
        "min_bleu4": "evaluate.min_bleu4",
    }
    return {
        key: getattr(args, name)
        for name, key in shorthand.items()
        if getattr(args, name, None) is not None
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        params = load_params(args.params)
        if args.command == "demo":
            params = apply_overrides(params, params.get("demo", {}))
        params = apply_overrides(params, args.param)
        params = apply_overrides(params, _shorthand_overrides(args))
        record = args.run(args, params)
    except QualityGateError as exc:
        print(f"imagelingo {args.command}: {exc}", file=sys.stderr)
        return 3
    except ImageLingoError as exc:
        print(f"imagelingo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if record and args.command not in ("demo", "caption"):
        summary = {
            k: record[k] for k in ("counts", "metrics", "best_val_bleu4", "seconds") if k in record
        }
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
