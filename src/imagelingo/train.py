"""Stage 4, train: fit the attention LSTM decoder on the feature store.

Teacher forcing with doubly stochastic attention, dropout and gradient clipping; early stopping on
validation BLEU-4 from real (greedy) decoding of the dev split; an atomic checkpoint every epoch
that `resume=True` continues from; deterministic for a given seed; tracked in MLflow. Then, unless
train.scst_epochs is 0, the self-critical phase (imagelingo.scst) from the best CE weights.

`checkpoint_uri` (a folder or an s3:// prefix) keeps a copy of the checkpoint and the best weights
outside the output folder, refreshed every epoch: a retried pipeline pod starts with an empty
output folder, finds them there and resumes. `checkpoint_location` derives that URI from a root
and the training inputs, so every attempt of one training gets the same one and a different
training never shares it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm import tqdm

from imagelingo import distributed
from imagelingo.artifacts import write_metadata
from imagelingo.checkpoint import CHECKPOINT, load_checkpoint, persist_epoch
from imagelingo.config import settings
from imagelingo.data.dataset import load_records
from imagelingo.data.text import tokenize
from imagelingo.devices import (
    autocast,
    grad_scaler,
    resolve_device,
    resolve_precision,
    scaled_step,
)
from imagelingo.errors import ImageLingoError
from imagelingo.features import FeatureStore
from imagelingo.inference.captioner import Captioner, save_model_dir
from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig
from imagelingo.inference.vocab import Vocab
from imagelingo.loss import caption_loss
from imagelingo.metrics import bleu_scores
from imagelingo.resume import BEFORE_THE_SETTING, changed_settings, inputs_digest
from imagelingo.scst import run_scst, scst_metadata
from imagelingo.tracking import mlflow_run

log = logging.getLogger(__name__)


@settings("train")
class TrainConfig:
    """params.yaml's `train` section: the defaults and what each means are written there."""

    seed: int
    device: str  # where it runs, not what it learns: a checkpoint resumes on another device
    precision: str
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


def _resumed_precision(
    config: TrainConfig, requested: str, checkpoint: dict, device
) -> TrainConfig:
    """A run asked for precision auto resumes in the precision it started in (a retried pod may
    land on another kind of node); an explicit precision stays, and must match the checkpoint."""
    if requested != "auto":
        return config
    saved = checkpoint["config"].get("precision", BEFORE_THE_SETTING["precision"])
    return replace(config, precision=resolve_precision(saved, device))


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


def checkpoint_location(
    root: str, dataset_dir: Path, vocab_path: Path, features_dir: Path, config: TrainConfig
) -> str:
    """`root`/<key>, the key resume.inputs_digest of what this training reads (the epoch budget
    and the device left out: a retry may extend the one and move to another)."""
    key = inputs_digest(dataset_dir, vocab_path, features_dir, asdict(config))
    return f"{root.rstrip('/')}/{key}"


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
    # Under torchrun (WORLD_SIZE > 1): DistributedDataParallel; rank 0 alone reads the checkpoint
    # and writes anything (imagelingo.distributed).
    world = distributed.world_from_env()
    device = resolve_device(config.device, world.local_rank if world.distributed else None)
    requested = config.precision
    config = replace(config, precision=resolve_precision(config.precision, device))
    distributed.check_batch_size(world, config.batch_size)
    distributed.init(world, device)
    out_dir = Path(out_dir)
    if world.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint_uri and world.main:
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
    decoder.to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    progress = {
        "epoch": 0,
        "best_bleu4": -1.0,
        "best_epoch": 0,
        "history": [],
        "mlflow_run_id": None,
    }
    checkpoint_path, checkpoint = out_dir / CHECKPOINT, None
    if world.main and resume and checkpoint_path.is_file():
        checkpoint = load_checkpoint(checkpoint_path)
    elif world.main and resume:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out_dir)
    checkpoint = distributed.broadcast(world, checkpoint)  # every rank resumes from rank 0's
    if checkpoint is not None:
        config = _resumed_precision(config, requested, checkpoint, device)
        changed = changed_settings(checkpoint["config"], asdict(config), asdict(TrainConfig()))
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
    if requested == "auto":
        log.info("train.precision auto: %s on %s", config.precision, device)
    scaler = grad_scaler(device, config.precision)
    model = decoder
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            decoder, device_ids=[device.index] if device.type == "cuda" else None
        )

    tracking = (
        mlflow_run(mlflow_tracking_uri, run_id=progress["mlflow_run_id"], run_name="train")
        if world.main
        else contextlib.nullcontext(distributed.NoTracking())
    )
    with tracking as mlflow:
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
            metrics = _train_epoch(
                model,
                optimizer,
                samples,
                train_store,
                config,
                epoch,
                device=device,
                world=world,
                scaler=scaler,
            )
            # rank 0 validates; the others wait for its score (early stopping is everyone's)
            metrics["val_bleu4"] = distributed.broadcast(
                world,
                validation_bleu4(decoder, vocab, dev_store, dev_records, config.val_max_len)
                if world.main
                else None,
            )
            progress["history"].append({"epoch": epoch, **metrics})
            if metrics["val_bleu4"] > progress["best_bleu4"]:
                progress["best_bleu4"], progress["best_epoch"] = metrics["val_bleu4"], epoch
                if world.main:
                    save_model_dir(out_dir, decoder, vocab, train_store.spec)
            progress["epoch"] = epoch
            if world.main:
                persist_epoch(
                    out_dir, config, progress, decoder, optimizer, checkpoint_uri, s3_endpoint_url
                )
            mlflow.log_metrics(metrics, step=epoch)
            log.info(
                "epoch %d: loss %.3f, val BLEU-4 %.4f, %.0f captions/s",
                epoch,
                metrics["train_loss"],
                metrics["val_bleu4"],
                metrics["captions_per_second"],
            )
        if config.scst_epochs:
            # SCST runs in one process (its sampling loop is no DDP forward pass): under torchrun
            # the processes part after CE, which left them in step, and rank 0 carries on alone
            distributed.finish(world)
        if config.scst_epochs and world.main:
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
        if not world.main:  # rank 0 writes the model directory's metadata and logs it
            distributed.finish(world)
            return {}
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
        if checkpoint_uri:  # with the weights: a Kubeflow TrainJob's task takes all from there
            put_files([out_dir / "metadata.json"], checkpoint_uri, s3_endpoint_url)
        mlflow.log_metric("best_val_bleu4", progress["best_bleu4"])
        for name in ("decoder.safetensors", "config.json", "vocab.json", "metadata.json"):
            mlflow.log_artifact(str(out_dir / name), artifact_path="model")
    distributed.finish(world)
    return record


def _rank_share(world: distributed.World, rows: list[int], captions, lengths):
    """This rank's rows of the global batch, and the weights that make the ranks' losses add up
    to the global batch's: its share of the batch's words (cross-entropy is a mean over words)
    and of its images (the attention penalty is a mean over images)."""
    mine = distributed.rows_of(world, len(rows))
    local_rows = rows[mine]
    if not local_rows:  # a last batch smaller than the world: row 0 at weight 0, so this rank
        return rows[:1], captions[:1], lengths[:1], 0.0, 0.0  # still joins the all-reduce
    words = lengths - 1
    local_lengths = lengths[mine]
    return (
        local_rows,
        captions[mine, : int(local_lengths[0])],
        local_lengths,
        float(words[mine].sum() / words.sum()),
        len(local_rows) / len(rows),
    )


def _train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples,
    store: FeatureStore,
    config: TrainConfig,
    epoch: int,
    device: torch.device = torch.device("cpu"),
    world: distributed.World = distributed.World(),
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    # Shuffling and dropout are seeded per epoch, so a resumed run repeats exactly what an
    # uninterrupted one would have done from here. Every rank draws the same global batches;
    # dropout differs per rank (rank 0's is the single-process run's).
    torch.manual_seed(config.seed * 1000 + epoch + 7919 * world.rank)
    scaler = scaler or grad_scaler(device, "fp32")
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
        disable=not world.main,
    )
    for rows, captions, lengths in bar:
        if world.distributed:
            rows, captions, lengths, word_share, image_share = _rank_share(
                world, rows, captions, lengths
            )
        features = store.tensor(rows).to(device, non_blocking=True)
        with autocast(device, config.precision):
            scores, targets, attention_total = model(features, captions.to(device), lengths)
        # the loss in fp32 outside autocast: log-softmax over the vocabulary in bf16 loses digits
        loss, ce = caption_loss(scores.float(), targets, attention_total.float(), config.alpha_c)
        if world.distributed:
            # this rank's part of the global batch's loss; DDP averages gradients over ranks,
            # so x world size makes them the global batch's gradients
            penalty = loss - ce  # alpha_c x attention penalty: a mean over this rank's images
            ce = ce * word_share
            loss = ce + penalty * image_share
            backward = loss * world.size
        else:
            backward = loss
        scaled_step(backward, model, optimizer, scaler, config.grad_clip)
        total_loss, total_ce, batches = total_loss + loss.item(), total_ce + ce.item(), batches + 1
        bar.set_postfix(loss=f"{total_loss / batches:.3f}")
    total_loss, total_ce = distributed.all_sum(world, [total_loss, total_ce])
    seconds = time.perf_counter() - epoch_started
    return {
        "train_loss": total_loss / batches,
        "train_ce": total_ce / batches,
        "lr": optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(seconds, 2),
        "captions_per_second": round(len(samples) / seconds, 1),
    }
