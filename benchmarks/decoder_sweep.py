"""Hyper-parameter sweep for the decoder on a GPU (or CPU), used to choose params.yaml defaults.

Not part of the pipeline: it reuses the library's model, loss, batching and BLEU, but keeps the
features on the accelerator and skips MLflow so several settings train side by side quickly.

    python benchmarks/decoder_sweep.py extract --images DIR [DIR ...] --captions captions.jsonl \
        --features feats.pt
    python benchmarks/decoder_sweep.py train --features feats.pt --captions captions.jsonl \
        --vocab vocab.json --epochs 15 --set lr=0.001 --set lr_decay=0.8
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import harness
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from imagelingo.data.dataset import ImageRecord  # noqa: E402
from imagelingo.data.text import tokenize  # noqa: E402
from imagelingo.encoders import build_encoder, preprocess  # noqa: E402
from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig, beam_search  # noqa: E402
from imagelingo.inference.vocab import Vocab  # noqa: E402
from imagelingo.loss import caption_loss  # noqa: E402
from imagelingo.metrics import bleu_scores  # noqa: E402
from imagelingo.train import TrainConfig, _batches  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load_records(path: Path) -> list[ImageRecord]:
    return [ImageRecord(**json.loads(line)) for line in path.read_text().splitlines()]


def extract(args) -> None:
    encoder, spec = build_encoder("efficientnet_lite0")
    encoder = encoder.to(DEVICE)
    where = {p.name: p for d in args.images for p in Path(d).iterdir()}
    records = load_records(args.captions)
    grids = {}
    with torch.inference_mode():
        for start in range(0, len(records), 256):
            chunk = records[start : start + 256]
            pixels = torch.stack([preprocess(Image.open(where[r.image]), spec) for r in chunk])
            out = encoder(pixels.to(DEVICE)).half().cpu()
            grids.update({r.image: g for r, g in zip(chunk, out, strict=True)})
    torch.save(grids, args.features)
    print(f"extracted {len(grids)} grids")


def caption_all(decoder, features, vocab, beam_width, length_penalty=0.0):
    words = []
    for start in range(0, len(features), 500):
        results = beam_search(
            decoder,
            features[start : start + 500].float(),
            beam_width,
            30,
            vocab.start_id,
            vocab.end_id,
            length_penalty,
        )
        words += [vocab.decode(r.tokens) for r in results]
    return words


def train(args) -> None:
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    ema_decay = overrides.pop("ema", 0.0)
    smoothing = overrides.pop("label_smoothing", 0.0)
    config = dataclasses.replace(TrainConfig(epochs=args.epochs), **overrides)
    torch.manual_seed(config.seed)
    grids = torch.load(args.features)
    vocab = Vocab.load(args.vocab)
    records = load_records(args.captions)
    split = {s: [r for r in records if r.split == s] for s in ("train", "dev", "test")}
    feats = {s: torch.stack([grids[r.image] for r in rs]).to(DEVICE) for s, rs in split.items()}
    refs = {s: [[tokenize(c) for c in r.captions] for r in rs] for s, rs in split.items()}
    samples = [
        (i, vocab.encode(tokenize(c)[: config.max_caption_len]))
        for i, r in enumerate(split["train"])
        for c in r.captions
    ]
    decoder = CaptionDecoder(
        DecoderConfig(
            len(vocab),
            1280,
            config.embed_dim,
            config.hidden_dim,
            config.attention_dim,
            config.context_dim,
            config.dropout,
        )
    ).to(DEVICE)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    ema = (
        torch.optim.swa_utils.AveragedModel(
            decoder, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay)
        )
        if ema_decay
        else None
    )
    best, best_state, history = -1.0, None, []
    for epoch in range(1, config.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * config.lr_decay ** (epoch - 1)
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        decoder.train()
        started = time.time()
        for rows, captions, lengths in _batches(samples, config.batch_size, generator):
            scores, targets, attention = decoder(
                feats["train"][rows].float(), captions.to(DEVICE), lengths
            )
            loss, _ = caption_loss(scores, targets, attention, config.alpha_c, smoothing)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(decoder)
        scored = ema.module if ema is not None else decoder
        scored.eval()
        val = bleu_scores(refs["dev"], caption_all(scored, feats["dev"], vocab, 1))["bleu4"]
        history.append(round(val, 4))
        print(f"epoch {epoch} val_bleu4 {val:.4f} ({time.time() - started:.0f}s)", flush=True)
        if val > best:
            best, best_state = val, {k: v.clone() for k, v in scored.state_dict().items()}
    decoder.load_state_dict(best_state)
    decoder.eval()
    test = {
        f"beam{k}_lp{lp}": round(
            bleu_scores(refs["test"], caption_all(decoder, feats["test"], vocab, k, lp))["bleu4"], 4
        )
        for k in (1, 3, 5)
        for lp in (0.0, 1.0)
    }
    print(
        json.dumps(
            {
                "set": overrides,
                "ema": ema_decay,
                "smoothing": smoothing,
                "val_history": history,
                "best_val": best,
                "test_bleu4": test,
            }
        )
    )


def main() -> None:
    parser = harness.parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--images", type=Path, nargs="+", required=True)
    p.add_argument("--captions", type=Path, required=True)
    p.add_argument("--features", type=Path, required=True)
    p = sub.add_parser("train")
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--captions", type=Path, required=True)
    harness.add_inputs(p, "vocab", required=True)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    extract(args) if args.command == "extract" else train(args)


if __name__ == "__main__":
    main()
