"""Self-critical sequence training (Rennie et al. 2017): the second phase of `imagelingo train`.

After cross-entropy training the decoder is fine-tuned to maximise CIDEr-D of what it generates.
Per batch of train images it samples `scst_samples` (K) captions per image from its own softmax;
each sample's reward is its CIDEr-D against the image's references (document frequencies from
the train captions; the sentence end counted as a last word, `with_end`), its baseline the mean
reward of the image's OTHER K-1 samples (no greedy decode needed), and the loss
-(reward - baseline) * (sum of the sample's word log-probs).
Sampling runs with dropout off and under train.precision's autocast (bf16 halves its time on
CPUs with native bf16); the log-softmax and the loss stay fp32.

The CE phase's best model is kept in out_dir/cross_entropy/ before SCST starts; SCST starts
from those weights, with a fresh Adam at `scst_lr`. Every SCST epoch ends with a greedy decode
of dev scored by the plain CIDEr-D, as evaluate reports it (val_cider): the best-on-val_cider
weights become the model in out_dir (the CE model stays there if SCST never beats it), and
`patience` epochs without a better val_cider stop the phase. The checkpoint (imagelingo.checkpoint,
train.py's file) records the phase: a killed SCST phase resumes after its last finished epoch,
with the weights an uninterrupted run has.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from imagelingo.artifacts import CROSS_ENTROPY_DIR
from imagelingo.checkpoint import CHECKPOINT, load_checkpoint, persist_epoch
from imagelingo.cider import CiderD
from imagelingo.data.text import tokenize
from imagelingo.devices import autocast, grad_scaler, scaled_step
from imagelingo.errors import ImageLingoError
from imagelingo.features import FeatureStore
from imagelingo.inference.captioner import MODEL_FILES, WEIGHTS_FILE, Captioner, save_model_dir
from imagelingo.inference.decoder import CaptionDecoder
from imagelingo.inference.vocab import Vocab
from imagelingo.metrics import bleu_scores

log = logging.getLogger(__name__)
SCST_SETTINGS = ("scst_epochs", "scst_lr", "scst_samples", "scst_batch_size")
# The sentence end as the reward's last word, in the samples and the references (as in Luo's SCST
# code, "CIDEr-D with <eos>"). Without it, a sample cut off after "in front of a" loses nothing,
# since CIDEr only rewards the n-grams present: on Flickr8k SCST learned to stop mid-phrase (49 of
# 1,000 test captions ended on "a", "the", "of"...; none of the CE model's). With it, "grass <end>"
# is an n-gram a reference has and "of a <end>" one none has. No tokenized word has "<".
END_WORD = "<end>"


def with_end(words: list[str]) -> list[str]:
    return [*words, END_WORD]


def sample_captions(
    decoder: CaptionDecoder,
    features: torch.Tensor,
    samples: int,
    max_len: int,
    vocab: Vocab,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `samples` captions per image from the decoder's softmax (the global torch RNG).

    Returns (words [B*samples, T], the rows image-major; summed log-probs [B*samples], with
    gradient). A caption's words after its <end> are <pad>, and their log-probs are not counted;
    <pad>, <start> and <unk> are never sampled, as the captioner never emits them.
    """
    state = decoder.init_state(features)
    state = tuple(s.repeat_interleave(samples, dim=0) for s in state)
    rows, device = features.shape[0] * samples, features.device
    banned = torch.zeros(len(vocab), dtype=torch.bool, device=device)
    banned[[vocab.pad_id, vocab.start_id, vocab.unk_id]] = True
    tokens = torch.full((rows, max_len), vocab.pad_id, dtype=torch.long, device=device)
    log_prob = features.new_zeros(rows)
    # Only the captions still running go through each step: finished rows leave the batch, which
    # halves the work (a batch's longest sample is about twice its mean length).
    live = torch.arange(rows, device=device)
    words = torch.full((rows,), vocab.start_id, dtype=torch.long, device=device)
    steps = 0
    for t in range(max_len):
        scores, state, _ = decoder.step(words, state)
        # fp32 log-softmax even under autocast: bf16 keeps too few digits of a 2,500-word softmax
        log_probs = F.log_softmax(scores.float().masked_fill(banned, float("-inf")), dim=-1)
        words = torch.multinomial(log_probs.detach().exp(), 1).squeeze(1)
        log_prob = log_prob.index_add(0, live, log_probs.gather(1, words.unsqueeze(1)).squeeze(1))
        tokens[live, t] = words
        steps = t + 1
        running = words != vocab.end_id
        if not bool(running.any()):
            break
        live, words = live[running], words[running]
        state = tuple(s[running] for s in state)
    return tokens[:, :steps], log_prob


def self_critical_loss(
    rewards: torch.Tensor, log_prob: torch.Tensor, samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, advantages): the baseline of a sample is the mean reward of the other samples of
    its image; rows are image-major, `samples` per image."""
    grid = rewards.view(-1, samples)
    baseline = (grid.sum(dim=1, keepdim=True) - grid) / (samples - 1)
    advantage = (grid - baseline).view(-1)
    return -(advantage * log_prob).mean(), advantage


def scst_step(
    decoder: CaptionDecoder,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    features: torch.Tensor,
    references: list,
    cider: CiderD,
    config,
    vocab: Vocab,
) -> tuple[torch.Tensor, list[list[str]]]:
    """One SCST update on a batch of images (`references`: each image's reference vectors from
    `cider`, the CiderD of `with_end` references of `reward_cider`): sample (dropout off) under
    train.precision's autocast, reward each sample, step the optimizer.
    Returns (rewards, the sampled captions' words)."""
    k = config.scst_samples
    # Dropout off: the policy sampled and improved is the one evaluation and serving decode with.
    # On Flickr8k this beat sampling through dropout 0.5 (RESULTS.md, "SCST variants").
    decoder.eval()
    with autocast(features.device, config.precision):
        words, log_prob = sample_captions(decoder, features, k, config.val_max_len, vocab)
    captions = [vocab.decode(ids) for ids in words.tolist()]
    # a sample that hit val_max_len without <end> gets no end word: it did not end
    ended = (words == vocab.end_id).any(dim=1).tolist()
    rewards = torch.tensor(
        [
            cider.score(with_end(c) if e else c, references[j // k])
            for j, (c, e) in enumerate(zip(captions, ended, strict=True))
        ],
        device=features.device,
    )
    loss, _ = self_critical_loss(rewards, log_prob, k)
    scaled_step(loss, decoder, optimizer, scaler, config.grad_clip)
    return rewards, captions


def reward_cider(train_refs: list[list[list[str]]]) -> tuple[CiderD, list]:
    """The reward's CiderD (document frequencies of the `with_end` train references) and each
    train image's reference vectors under it."""
    ended = [[with_end(ref) for ref in refs] for refs in train_refs]
    cider = CiderD(ended)
    return cider, [cider.references(refs) for refs in ended]


def _greedy_dev_scores(
    decoder: CaptionDecoder,
    vocab: Vocab,
    store: FeatureStore,
    rows: list[int],
    references: list[list[list[str]]],
    cider: CiderD,
    max_len: int,
) -> dict:
    """val_cider (CIDEr-D with the train document frequencies) and val_bleu4 of greedy dev."""
    decoder.eval()
    # dev read a chunk at a time (store.lazy); beam search moves each to the decoder's device
    captions = Captioner(decoder, vocab, store.spec).caption_features(
        store.lazy(rows), beam_width=1, max_len=max_len, batch_size=500
    )
    words = [c.words for c in captions]
    return {
        "val_cider": cider.corpus_score(references, words)[0],
        "val_bleu4": bleu_scores(references, words)["bleu4"],
    }


def _keep_cross_entropy_model(
    out_dir: Path,
    config,
    progress: dict,
    checkpoint_uri: str | None,
    s3_endpoint_url: str | None,
    started: bool = False,
) -> Path:
    """out_dir/cross_entropy/ holds the CE phase's best model before SCST overwrites out_dir's.
    Copied once (a rerun after a kill between SCST's first best weights and its first
    checkpoint must not copy those), and mirrored under checkpoint_uri for a retried pod. Its
    metadata.json names no MLflow run: evaluating it must not overwrite the SCST model's test
    scores in the training run. Once SCST has `started`, out_dir's model is SCST's: the CE
    model can then only come back from checkpoint_uri (a retried pod's empty out_dir)."""
    from imagelingo.artifacts import write_metadata
    from imagelingo.storage import get_files, put_files

    ce_dir = out_dir / CROSS_ENTROPY_DIR
    complete = lambda: all((ce_dir / n).is_file() for n in MODEL_FILES)  # noqa: E731
    remote = f"{checkpoint_uri.rstrip('/')}/{CROSS_ENTROPY_DIR}" if checkpoint_uri else None
    if remote and not complete():
        get_files(remote, ce_dir, s3_endpoint_url)
    if not complete() and started:
        log.warning("%s: the cross-entropy model is missing and SCST has started", ce_dir)
    elif not complete():
        missing = [n for n in MODEL_FILES if not (out_dir / n).is_file()]
        if missing:
            raise ImageLingoError(f"{out_dir}: no cross-entropy model to start SCST from {missing}")
        tmp = out_dir / f".{CROSS_ENTROPY_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in MODEL_FILES:
            shutil.copyfile(out_dir / name, tmp / name)
        write_metadata(
            tmp,
            "train",
            inputs={},
            params=asdict(config),
            counts={"epochs_run": progress["epoch"]},
            phase="cross_entropy",
            best_epoch=progress["best_epoch"],
            best_val_bleu4=progress["best_bleu4"],
            history=progress["history"],
        )
        shutil.rmtree(ce_dir, ignore_errors=True)
        os.replace(tmp, ce_dir)
        if remote:
            put_files(
                [ce_dir / n for n in (*MODEL_FILES, "metadata.json")], remote, s3_endpoint_url
            )
    return ce_dir


def run_scst(
    decoder: CaptionDecoder,
    vocab: Vocab,
    train_store: FeatureStore,
    dev_store: FeatureStore,
    train_records,
    dev_records,
    config,
    out_dir: Path,
    progress: dict,
    mlflow,
    checkpoint_uri: str | None = None,
    s3_endpoint_url: str | None = None,
) -> dict:
    """Run (or resume) the SCST phase after CE; `progress` (train.py's) gains "scst" (this
    phase's state) and SCST entries in its history. Returns the "scst" state."""
    from safetensors.torch import load_file

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        raise ImageLingoError(
            "SCST runs in one process: after the torchrun CE phase, continue it with "
            "`imagelingo train ... --resume` (same --out) and train.scst_epochs set"
        )
    if config.scst_samples < 2:
        raise ImageLingoError(
            f"train.scst_samples is {config.scst_samples}: the baseline of a sample is the "
            "mean reward of the image's other samples, so it needs at least 2"
        )
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT
    train_refs = [[tokenize(c) for c in r.captions] for r in train_records]
    reward, train_vectors = reward_cider(train_refs)
    cider = CiderD(train_refs)  # val_cider: the plain CIDEr-D, as evaluate reports it
    train_rows = [train_store.row[r.image] for r in train_records]
    dev_refs = [[tokenize(c) for c in r.captions] for r in dev_records]
    dev_rows = [dev_store.row[r.image] for r in dev_records]

    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.scst_lr)
    state = progress.get("scst")
    if state is None:
        ce_dir = _keep_cross_entropy_model(
            out_dir, config, progress, checkpoint_uri, s3_endpoint_url
        )
        decoder.load_state_dict(load_file(ce_dir / WEIGHTS_FILE))
        start = _greedy_dev_scores(
            decoder, vocab, dev_store, dev_rows, dev_refs, cider, config.val_max_len
        )
        state = {
            "ce_epochs": progress["epoch"],
            "epoch": 0,
            "start_cider": start["val_cider"],
            "best_cider": start["val_cider"],  # SCST's model replaces CE's only if better
            "best_epoch": 0,
        }
        progress["scst"] = state
        known = mlflow.get_run(progress["mlflow_run_id"]).data.params
        mlflow.log_params({k: getattr(config, k) for k in SCST_SETTINGS if k not in known})
        mlflow.log_metrics(start, step=state["ce_epochs"])
        log.info("SCST starts from the CE model: val CIDEr-D %.4f", start["val_cider"])
    else:
        _keep_cross_entropy_model(
            out_dir, config, progress, checkpoint_uri, s3_endpoint_url, started=True
        )
        checkpoint = load_checkpoint(checkpoint_path)
        changed = {
            k: (checkpoint["config"].get(k), getattr(config, k))
            for k in SCST_SETTINGS[1:]
            if checkpoint["config"].get(k) != getattr(config, k)
        }
        if changed:  # before SCST starts they may change (train._changed_settings); not after
            raise ImageLingoError(
                f"{checkpoint_path}: SCST started with other settings "
                + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items())
                + "; keep them, or train into a new --out directory"
            )
        decoder.load_state_dict(checkpoint["decoder"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        log.info(
            "resuming SCST after its epoch %d (best val CIDEr-D %.4f)",
            state["epoch"],
            state["best_cider"],
        )
    for epoch in range(state["epoch"] + 1, config.scst_epochs + 1):
        stale = epoch - 1 - state["best_epoch"]
        if stale >= config.patience:
            log.info("SCST early stop: no better val CIDEr-D for %d epochs", stale)
            break
        metrics = _scst_epoch(
            decoder, optimizer, vocab, train_store, train_rows, train_vectors, reward, config, epoch
        )
        metrics.update(
            _greedy_dev_scores(
                decoder, vocab, dev_store, dev_rows, dev_refs, cider, config.val_max_len
            )
        )
        step = state["ce_epochs"] + epoch
        progress["history"].append({"epoch": step, "phase": "scst", "scst_epoch": epoch, **metrics})
        if metrics["val_cider"] > state["best_cider"]:
            state["best_cider"], state["best_epoch"] = metrics["val_cider"], epoch
            save_model_dir(out_dir, decoder, vocab, train_store.spec)
        state["epoch"] = epoch
        persist_epoch(
            out_dir, config, progress, decoder, optimizer, checkpoint_uri, s3_endpoint_url
        )
        mlflow.log_metrics(metrics, step=step)
        log.info(
            "SCST epoch %d: mean reward %.4f, val CIDEr-D %.4f, val BLEU-4 %.4f",
            epoch,
            metrics["train_reward"],
            metrics["val_cider"],
            metrics["val_bleu4"],
        )
    mlflow.log_metric("best_val_cider", state["best_cider"])
    return state


def scst_metadata(progress: dict) -> dict:
    """What the model directory's metadata.json says about the SCST phase ({} without one)."""
    state = progress.get("scst")
    if state is None:
        return {}
    return {"best_val_cider": state["best_cider"], "scst": state}


def _scst_epoch(
    decoder: CaptionDecoder,
    optimizer: torch.optim.Optimizer,
    vocab: Vocab,
    store: FeatureStore,
    rows: list[int],
    references: list,
    cider: CiderD,
    config,
    epoch: int,
) -> dict:
    # Seeded per epoch (order, samples and dropout), so a resumed run repeats an uninterrupted
    # one; the offset keeps these seeds apart from the CE epochs'.
    seed = config.seed * 1000 + 500 + epoch
    torch.manual_seed(seed)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    size = config.scst_batch_size
    device = next(decoder.parameters()).device
    scaler = grad_scaler(device, config.precision)
    total_reward = total_words = 0.0
    batches = 0
    started = time.perf_counter()
    bar = tqdm(
        range(0, len(order), size),
        desc=f"scst epoch {epoch}",
        total=-(-len(order) // size),
        unit="batch",
    )
    for first in bar:
        images = order[first : first + size]
        features = store.tensor([rows[i] for i in images]).to(device, non_blocking=True)
        rewards, captions = scst_step(
            decoder,
            optimizer,
            scaler,
            features,
            [references[i] for i in images],
            cider,
            config,
            vocab,
        )
        total_reward += float(rewards.mean())
        total_words += sum(map(len, captions)) / len(captions)
        batches += 1
        bar.set_postfix(reward=f"{total_reward / batches:.3f}")
    seconds = time.perf_counter() - started
    return {
        "train_reward": total_reward / batches,
        "sample_words": total_words / batches,
        "scst_lr": optimizer.param_groups[0]["lr"],
        "epoch_seconds": round(seconds, 2),
        "images_per_second": round(len(order) / seconds, 1),
    }
