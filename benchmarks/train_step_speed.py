"""CE training-step speed on this CPU: captions/s of the decoder's training step (forward,
loss, backward, clip, Adam) over the real Flickr8k feature store, for torch threads, precision
(fp32 or bf16 autocast) and batch layout. Reads only: nothing is written (no model directory).

    .venv/bin/python benchmarks/train_step_speed.py --features runs/f8k/features \\
        --dataset runs/f8k/dataset --vocab runs/f8k/vocab/vocab.json

Layouts: `shuffled` is what training does (random batches, each sorted by caption length);
`bucketed` sorts runs of 50 shuffled batches by length before cutting them, so a batch's
captions are of similar length and the decoder's time loop has fewer short tail steps. The
baseline (the defaults: torch's threads, or --threads, fp32, shuffled, batch 64) runs first and
last, so the drift of a loaded machine shows.
"""

from __future__ import annotations

import json
import time

import harness
import torch
from torch.nn.utils import clip_grad_norm_

from imagelingo.data.dataset import load_records
from imagelingo.devices import autocast
from imagelingo.features import FeatureStore
from imagelingo.inference.decoder import CaptionDecoder
from imagelingo.inference.vocab import Vocab
from imagelingo.loss import caption_loss
from imagelingo.train import TrainConfig, _batches, _encode_captions, decoder_config


def bucketed(samples, batch_size: int, generator: torch.Generator, pool: int = 50):
    """Batches of similar-length captions: shuffle, sort each run of `pool` batches by length."""
    order = torch.randperm(len(samples), generator=generator).tolist()
    span = batch_size * pool
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -len(samples[i][1]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    for index in torch.randperm(len(batches), generator=generator).tolist():
        batch = [samples[i] for i in batches[index]]
        lengths = torch.tensor([len(ids) for _, ids in batch])
        captions = torch.zeros(len(batch), int(lengths[0]), dtype=torch.long)
        for row, (_, ids) in enumerate(batch):
            captions[row, : len(ids)] = torch.tensor(ids)
        yield [row for row, _ in batch], captions, lengths


def measure(samples, store, vocab_size, config, threads, precision, layout, batches) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    decoder = CaptionDecoder(decoder_config(config, vocab_size, store.spec.feature_dim)).train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    make = _batches if layout == "shuffled" else bucketed
    device = torch.device("cpu")
    captions_done, words, seconds = 0, 0, 0.0
    for step, (rows, captions, lengths) in enumerate(make(samples, config.batch_size, generator)):
        if step == batches + 3:
            break
        started = time.perf_counter()
        with autocast(device, precision):
            scores, targets, attention_total = decoder(store.tensor(rows), captions, lengths)
            loss, _ = caption_loss(scores, targets, attention_total, config.alpha_c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        if step >= 3:  # the first batches warm up allocator and oneDNN
            seconds += time.perf_counter() - started
            captions_done += len(rows)
            words += int((lengths - 1).sum())
    return {
        "threads": threads,
        "precision": precision,
        "layout": layout,
        "batch_size": config.batch_size,
        "captions_per_s": round(captions_done / seconds, 1),
        "words_per_s": round(words / seconds),
        "last_loss": round(float(loss.detach()), 3),
    }


def main() -> None:
    parser = harness.parser(__doc__, "features", "dataset", "vocab")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per variant")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads of every variant (0: torch's)"
    )
    args = parser.parse_args()
    vocab = Vocab.load(args.vocab)
    store = FeatureStore(args.features, "train")
    base = TrainConfig()
    samples, _ = _encode_captions(
        load_records(args.dataset, "train"), store, vocab, base.max_caption_len
    )
    default_threads = args.threads or torch.get_num_threads()
    other_threads = 1 if default_threads > 1 else 2
    variants = [
        (default_threads, "fp32", "shuffled", base.batch_size),  # baseline: what training does
        (other_threads, "fp32", "shuffled", base.batch_size),
        (default_threads, "bf16", "shuffled", base.batch_size),
        (default_threads, "fp32", "bucketed", base.batch_size),
        (default_threads, "bf16", "bucketed", base.batch_size),
        (default_threads, "fp32", "shuffled", 2 * base.batch_size),
        (default_threads, "fp32", "shuffled", base.batch_size),  # baseline again: drift
    ]
    for threads, precision, layout, batch_size in variants:
        config = TrainConfig(batch_size=batch_size)
        row = measure(samples, store, len(vocab), config, threads, precision, layout, args.batches)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
