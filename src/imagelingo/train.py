"""Stage 4, train: fit the attention LSTM decoder on the feature store.

Teacher forcing with doubly stochastic attention, dropout and gradient clipping; early stopping on
validation BLEU-4 from real (greedy) decoding of the dev split; an atomic checkpoint every epoch
that `resume=True` continues from; deterministic for a given seed; tracked in MLflow.

`checkpoint_uri` (a folder or an s3:// prefix) keeps a copy of the checkpoint and the best weights
outside the output folder, refreshed every epoch: a retried pipeline pod starts with an empty
output folder, finds them there and resumes. `checkpoint_location` derives that URI from a root
and the training inputs, so every attempt of one training gets the same one and a different
training never shares it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from imagelingo.artifacts import write_metadata
from imagelingo.config import settings
from imagelingo.data.dataset import load_records
from imagelingo.data.text import tokenize
from imagelingo.data.vocab import Vocab
from imagelingo.errors import ImageLingoError
from imagelingo.features import FeatureStore
from imagelingo.inference.captioner import Captioner, save_model_dir
from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig
from imagelingo.loss import caption_loss
from imagelingo.metrics import bleu_scores
from imagelingo.scst import run_scst, scst_metadata
from imagelingo.tracking import mlflow_run

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@settings("train")
class TrainConfig:
    """params.yaml's `train` section: the defaults and what each means are written there."""

    seed: int
    epochs: int
    batch_size: int
    lr: float
    lr_decay: float  # applied per epoch by hand: no scheduler state to save
    alpha_c: float
    grad_clip: float
    patience: int
    max_caption_len: int
    val_max_len: int
    embed_dim: int
    hidden_dim: int
    attention_dim: int
    context_dim: int
    dropout: float
    scst_epochs: int  # self-critical phase after CE (imagelingo.scst); 0: none
    scst_lr: float
    scst_samples: int
    scst_batch_size: int


def _encode_captions(
    records, store: FeatureStore, vocab: Vocab, max_len: int
) -> tuple[list[tuple[int, list[int]]], int]:
    samples, truncated = [], 0
    for record in records:
        for caption in record.captions:
            tokens = tokenize(caption)
            truncated += len(tokens) > max_len
            samples.append((store.row[record.image], vocab.encode(tokens[:max_len])))
    return samples, truncated


def _batches(samples, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(samples), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        batch = sorted(
            (samples[i] for i in order[start : start + batch_size]), key=lambda s: -len(s[1])
        )
        lengths = torch.tensor([len(ids) for _, ids in batch])
        captions = torch.zeros(len(batch), int(lengths[0]), dtype=torch.long)
        for row, (_, ids) in enumerate(batch):
            captions[row, : len(ids)] = torch.tensor(ids)
        yield [row for row, _ in batch], captions, lengths


def validation_bleu4(
    decoder: CaptionDecoder, vocab: Vocab, store: FeatureStore, records, max_len: int
) -> float:
    """BLEU-4 of greedy decoding on dev: what the model really generates, not teacher forcing."""
    decoder.eval()
    captions = Captioner(decoder, vocab, store.spec).caption_features(
        store.lazy([store.row[r.image] for r in records]),
        beam_width=1,
        max_len=max_len,
        batch_size=500,
    )
    decoder.train()
    references = [[tokenize(c) for c in r.captions] for r in records]
    return bleu_scores(references, [c.words for c in captions])["bleu4"]


def _changed_settings(saved: dict, current: dict) -> str:
    """Settings that differ, except the epoch budget (a resumed run may be extended) and the
    scst_* settings: free until the SCST phase starts (a finished CE run may be extended by
    one), imagelingo.scst checks them after."""
    return ", ".join(
        f"{k}: {saved.get(k)} -> {v}"
        for k, v in current.items()
        if k != "epochs" and not k.startswith("scst_") and saved.get(k) != v
    )


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def checkpoint_location(
    root: str, dataset_dir: Path, vocab_path: Path, features_dir: Path, config: TrainConfig
) -> str:
    """`root`/<key>, the key a digest of what this training reads: the captions, the vocabulary,
    the feature store's metadata and every setting but the epoch budget (which a resumed run may
    extend, as with --resume). Stable across retries of a task, different for other inputs."""
    digest = hashlib.sha256()
    for path in (
        Path(dataset_dir) / "captions.jsonl",
        Path(vocab_path),
        Path(features_dir) / "metadata.json",
    ):
        digest.update(path.read_bytes() if path.is_file() else b"")
        digest.update(b"\0")
    settings = {k: v for k, v in asdict(config).items() if k != "epochs"}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return f"{root.rstrip('/')}/{digest.hexdigest()[:16]}"


MODEL_FILES = ("decoder.safetensors", "config.json", "vocab.json")


def decoder_config(config: TrainConfig, vocab_size: int, feature_dim: int) -> DecoderConfig:
    """The decoder's shape: the training settings' sizes for this vocabulary and encoder."""
    return DecoderConfig(
        vocab_size=vocab_size,
        feature_dim=feature_dim,
        embed_dim=config.embed_dim,
        hidden_dim=config.hidden_dim,
        attention_dim=config.attention_dim,
        context_dim=config.context_dim,
        dropout=config.dropout,
    )


def train(
    dataset_dir: Path,
    vocab_path: Path,
    features_dir: Path,
    out_dir: Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    mlflow_tracking_uri: str | None = None,
    checkpoint_uri: str | None = None,
    s3_endpoint_url: str | None = None,
) -> dict:
    """Train, keep the best-on-dev weights in `out_dir`, return the metadata record. With
    `checkpoint_uri`, mirror the checkpoint there every epoch and resume from it."""
    from imagelingo.storage import get_files, put_files

    config = config or TrainConfig()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint_uri:
        restored = get_files(checkpoint_uri, out_dir, s3_endpoint_url)
        if CHECKPOINT in restored:
            log.info("checkpoint found at %s: resuming", checkpoint_uri)
            resume = True
    vocab = Vocab.load(vocab_path)
    train_store, dev_store = FeatureStore(features_dir, "train"), FeatureStore(features_dir, "dev")
    train_records = load_records(dataset_dir, "train")
    dev_records = load_records(dataset_dir, "dev")
    samples, truncated = _encode_captions(train_records, train_store, vocab, config.max_caption_len)

    torch.manual_seed(config.seed)
    decoder = CaptionDecoder(decoder_config(config, len(vocab), train_store.spec.feature_dim))
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    progress = {
        "epoch": 0,
        "best_bleu4": -1.0,
        "best_epoch": 0,
        "history": [],
        "mlflow_run_id": None,
    }
    checkpoint_path = out_dir / CHECKPOINT
    if resume and checkpoint_path.is_file():
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        changed = _changed_settings(checkpoint["config"], asdict(config))
        if changed:
            raise ImageLingoError(
                f"{checkpoint_path} was written with different settings "
                f"({changed}); train into a new --out directory or keep them"
            )
        decoder.load_state_dict(checkpoint["decoder"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        progress = checkpoint["progress"]
        log.info(
            "resuming after epoch %d (best BLEU-4 %.4f)", progress["epoch"], progress["best_bleu4"]
        )
    elif resume:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out_dir)

    with mlflow_run(
        mlflow_tracking_uri, run_id=progress["mlflow_run_id"], run_name="train"
    ) as mlflow:
        run_id = mlflow.active_run().info.run_id
        if progress["mlflow_run_id"] is None:
            mlflow.log_params(
                {
                    **asdict(config),
                    "vocab_size": len(vocab),
                    "encoder": train_store.spec.name,
                    "train_captions": len(samples),
                }
            )
        progress["mlflow_run_id"] = run_id
        decoder.train()
        # once SCST has started (the checkpoint says so), the CE phase is over
        last_ce_epoch = progress["epoch"] if "scst" in progress else config.epochs
        for epoch in range(progress["epoch"] + 1, last_ce_epoch + 1):
            stale = epoch - 1 - progress["best_epoch"]
            if progress["best_epoch"] and stale >= config.patience:
                log.info("early stop: no better validation BLEU-4 for %d epochs", stale)
                break
            metrics = _train_epoch(decoder, optimizer, samples, train_store, config, epoch)
            metrics["val_bleu4"] = validation_bleu4(
                decoder, vocab, dev_store, dev_records, config.val_max_len
            )
            progress["history"].append({"epoch": epoch, **metrics})
            if metrics["val_bleu4"] > progress["best_bleu4"]:
                progress["best_bleu4"], progress["best_epoch"] = metrics["val_bleu4"], epoch
                save_model_dir(out_dir, decoder, vocab, train_store.spec)
            progress["epoch"] = epoch
            _save_checkpoint(
                checkpoint_path,
                {
                    "config": asdict(config),
                    "progress": progress,
                    "decoder": decoder.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
            )
            if checkpoint_uri:  # the best weights first: the checkpoint names their epoch
                files = [out_dir / n for n in MODEL_FILES if (out_dir / n).is_file()]
                put_files([*files, checkpoint_path], checkpoint_uri, s3_endpoint_url)
            mlflow.log_metrics(metrics, step=epoch)
            log.info(
                "epoch %d: loss %.3f, val BLEU-4 %.4f, %.0f captions/s",
                epoch,
                metrics["train_loss"],
                metrics["val_bleu4"],
                metrics["captions_per_second"],
            )
        if config.scst_epochs:
            run_scst(
                decoder,
                vocab,
                train_store,
                dev_store,
                train_records,
                dev_records,
                config,
                out_dir,
                progress,
                mlflow,
                checkpoint_uri,
                s3_endpoint_url,
            )
        record = write_metadata(
            out_dir,
            "train",
            inputs={
                "dataset": str(dataset_dir),
                "vocab": str(vocab_path),
                "features": str(features_dir),
            },
            params=asdict(config),
            counts={
                "train_captions": len(samples),
                "truncated_captions": truncated,
                "dev_images": len(dev_records),
                "vocab_size": len(vocab),
                "epochs_run": progress["epoch"],
            },
            best_epoch=progress["best_epoch"],
            best_val_bleu4=progress["best_bleu4"],
            history=progress["history"],
            **scst_metadata(progress),
            mlflow_run_id=run_id,
            seconds=round(time.perf_counter() - started, 2),
        )
        mlflow.log_metric("best_val_bleu4", progress["best_bleu4"])
        for name in ("decoder.safetensors", "config.json", "vocab.json", "metadata.json"):
            mlflow.log_artifact(str(out_dir / name), artifact_path="model")
    return record


def _train_epoch(
    decoder: CaptionDecoder,
    optimizer: torch.optim.Optimizer,
    samples,
    store: FeatureStore,
    config: TrainConfig,
    epoch: int,
) -> dict:
    # Shuffling and dropout are seeded per epoch, so a resumed run repeats exactly what an
    # uninterrupted one would have done from here.
    torch.manual_seed(config.seed * 1000 + epoch)
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * config.lr_decay ** (epoch - 1)
    total_loss = total_ce = 0.0
    batches = 0
    epoch_started = time.perf_counter()
    bar = tqdm(
        _batches(samples, config.batch_size, generator),
        desc=f"train epoch {epoch}",
        total=-(-len(samples) // config.batch_size),
        unit="batch",
    )
    for rows, captions, lengths in bar:
        scores, targets, attention_total = decoder(store.tensor(rows), captions, lengths)
        loss, ce = caption_loss(scores, targets, attention_total, config.alpha_c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(decoder.parameters(), config.grad_clip)
        optimizer.step()
        total_loss, total_ce, batches = total_loss + loss.item(), total_ce + ce.item(), batches + 1
        bar.set_postfix(loss=f"{total_loss / batches:.3f}")
    seconds = time.perf_counter() - epoch_started
    return {
        "train_loss": total_loss / batches,
        "train_ce": total_ce / batches,
        "lr": optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(seconds, 2),
        "captions_per_second": round(len(samples) / seconds, 1),
    }
