"""Self-critical sequence training (imagelingo.scst), the second phase of `imagelingo train`: it
extends a finished cross-entropy run (even one whose checkpoint predates the scst settings),
keeps the CE model in cross_entropy/, raises dev CIDEr-D, is deterministic per seed and resumes
a killed phase to exactly the weights of an uninterrupted one."""

import dataclasses
import shutil

import pytest
import torch
from trained import assert_same_weights, run

import imagelingo.scst as scst_module
from imagelingo.artifacts import read_metadata
from imagelingo.checkpoint import CHECKPOINT
from imagelingo.cider import CiderD
from imagelingo.data.text import tokenize
from imagelingo.errors import ImageLingoError
from imagelingo.inference.decoder import CaptionDecoder, DecoderConfig
from imagelingo.inference.vocab import Vocab
from imagelingo.scst import reward_cider, sample_captions, self_critical_loss, with_end
from imagelingo.train import TrainConfig, train

# A small decoder, briefly trained with cross-entropy; SCST then runs a few short epochs.
CE = TrainConfig(
    epochs=2,
    batch_size=32,
    embed_dim=32,
    hidden_dim=64,
    attention_dim=32,
    context_dim=64,
    lr=3e-3,
    lr_decay=1.0,
    patience=5,
    scst_epochs=0,
    scst_lr=3e-4,
    scst_samples=4,
    scst_batch_size=16,
)
SCST = dataclasses.replace(CE, scst_epochs=2)


def learned(history):
    """The history without its timings."""
    timings = {"epoch_seconds", "images_per_second", "captions_per_second"}
    return [{k: v for k, v in h.items() if k not in timings} for h in history]


@pytest.fixture(scope="module")
def ce_run(pipeline_dirs, tmp_path_factory):
    """A finished CE-only run whose checkpoint predates the scst settings (its saved config has
    no scst_* keys), as a run trained before they existed would."""
    out = tmp_path_factory.mktemp("ce")
    run(pipeline_dirs, out, CE)
    checkpoint = torch.load(out / CHECKPOINT, weights_only=False)
    for key in scst_module.SCST_SETTINGS:
        del checkpoint["config"][key]
    torch.save(checkpoint, out / CHECKPOINT)
    return out


def extend(ce_run, out):
    shutil.copytree(ce_run, out)
    return out


@pytest.fixture(scope="module")
def uninterrupted(pipeline_dirs, ce_run, tmp_path_factory):
    out = extend(ce_run, tmp_path_factory.mktemp("scst") / "model")
    return out, run(pipeline_dirs, out, SCST, resume=True)


@pytest.mark.slow
def test_scst_extends_a_finished_ce_run_and_raises_dev_cider(ce_run, uninterrupted):
    out, record = uninterrupted
    phases = [h.get("phase", "ce") for h in record["history"]]
    assert phases == ["ce"] * CE.epochs + ["scst"] * SCST.scst_epochs  # no CE epoch rerun
    assert [h["epoch"] for h in record["history"]] == list(range(1, 5))
    state = record["scst"]
    assert record["best_val_cider"] == state["best_cider"] > state["start_cider"] + 0.1
    assert state["best_epoch"] >= 1 and record["best_val_bleu4"] > 0  # the CE phase's number
    # the CE model is kept beside the SCST one, unchanged
    assert_same_weights(out / "cross_entropy", ce_run)
    kept = read_metadata(out / "cross_entropy")
    assert kept["phase"] == "cross_entropy" and "mlflow_run_id" not in kept
    assert kept["best_val_bleu4"] == record["best_val_bleu4"]
    with pytest.raises(AssertionError):
        assert_same_weights(out, ce_run)


@pytest.mark.slow
def test_same_seed_gives_the_same_scst_weights(pipeline_dirs, ce_run, uninterrupted, tmp_path):
    record = run(pipeline_dirs, extend(ce_run, tmp_path / "again"), SCST, resume=True)
    assert learned(record["history"]) == learned(uninterrupted[1]["history"])
    assert_same_weights(tmp_path / "again", uninterrupted[0])


@pytest.mark.slow
def test_a_killed_scst_phase_resumes_to_the_uninterrupted_weights(
    pipeline_dirs, ce_run, uninterrupted, tmp_path, monkeypatch
):
    out = extend(ce_run, tmp_path / "killed")
    real = scst_module._scst_epoch
    with monkeypatch.context() as patch:

        def killed_in_epoch_2(*args):
            if args[-1] == 2:
                raise RuntimeError("pod evicted")
            return real(*args)

        patch.setattr(scst_module, "_scst_epoch", killed_in_epoch_2)
        with pytest.raises(RuntimeError, match="evicted"):
            run(pipeline_dirs, out, SCST, resume=True)
    calls = []
    monkeypatch.setattr(scst_module, "_scst_epoch", lambda *a: calls.append(a[-1]) or real(*a))
    record = run(pipeline_dirs, out, SCST, resume=True)
    assert calls == [2]  # neither CE nor SCST's epoch 1 ran again
    assert learned(record["history"]) == learned(uninterrupted[1]["history"])
    assert_same_weights(out, uninterrupted[0])
    assert_same_weights(out / "cross_entropy", ce_run)
    # once SCST has started, its settings are fixed
    with pytest.raises(ImageLingoError, match="scst_lr"):
        run(pipeline_dirs, out, dataclasses.replace(SCST, scst_lr=1e-4, scst_epochs=3), True)


def test_the_baseline_is_the_mean_reward_of_the_image_s_other_samples():
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 6.0])  # two images, three samples each
    log_prob = torch.tensor([-1.0, -2.0, -3.0, -1.0, -1.0, -1.0], requires_grad=True)
    loss, advantage = self_critical_loss(rewards, log_prob, samples=3)
    assert advantage.tolist() == [1.0 - 2.5, 2.0 - 2.0, 3.0 - 1.5, -3.0, -3.0, 6.0]
    loss.backward()
    assert log_prob.grad.tolist() == pytest.approx((-advantage / 6).tolist())


def test_the_reward_counts_the_sentence_end_so_a_caption_cut_mid_phrase_earns_less():
    corpus = [
        ["a dog runs on the grass", "a brown dog is running on the grass", "a dog runs on grass"],
        ["a man stands in front of a building", "a man is standing in front of a red building"],
        ["two children play in the water", "kids are splashing in the water"],
    ]
    refs = [[tokenize(c) for c in captions] for captions in corpus]
    plain, (reward, vectors) = CiderD(refs), reward_cider(refs)
    assert vectors[0] and len(vectors) == 3
    for image, whole, cut in [
        (0, "a dog runs on the grass", "a dog runs on the"),
        (1, "a man is standing in front of a building", "a man is standing in front of a"),
    ]:
        whole, cut = tokenize(whole), tokenize(cut)
        plain_refs = plain.references(refs[image])
        plain_gap = plain.score(whole, plain_refs) - plain.score(cut, plain_refs)
        reward_gap = reward.score(with_end(whole), vectors[image]) - reward.score(
            with_end(cut), vectors[image]
        )
        # measured when written: plain CIDEr-D 0.79 and 0.62 apart, with the end word 1.89 and 1.24
        assert plain_gap > 0 and reward_gap > 1.5 * plain_gap


def test_sampling_stops_counting_after_end_and_repeats_for_a_seed():
    vocab = Vocab(("<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs"))
    config = DecoderConfig(len(vocab), 8, 8, 16, 8, 8, 0.0)
    torch.manual_seed(0)
    decoder = CaptionDecoder(config)
    features = torch.randn(3, 5, 8)
    torch.manual_seed(1)
    words, log_prob = sample_captions(decoder, features, 4, 12, vocab)
    torch.manual_seed(1)
    again, _ = sample_captions(decoder, features, 4, 12, vocab)
    assert torch.equal(words, again) and words.shape[0] == 12
    assert not set(words.flatten().tolist()) & {vocab.start_id, vocab.unk_id}
    # the log-prob of a caption: its words' up to and including <end>, nothing after
    state = decoder.init_state(features)
    state = tuple(s.repeat_interleave(4, dim=0) for s in state)
    previous = torch.full((12,), vocab.start_id)
    expected = torch.zeros(12)
    done = torch.zeros(12, dtype=torch.bool)
    banned = torch.tensor([vocab.pad_id, vocab.start_id, vocab.unk_id])
    for t in range(words.shape[1]):
        scores, state, _ = decoder.step(previous, state)
        scores[:, banned] = float("-inf")
        step = torch.log_softmax(scores, dim=-1).gather(1, words[:, t : t + 1]).squeeze(1)
        expected += torch.where(done, torch.zeros(12), step)
        assert (words[done, t] == vocab.pad_id).all()
        done |= words[:, t] == vocab.end_id
        previous = words[:, t]
    assert torch.allclose(log_prob, expected, atol=1e-5)


@pytest.mark.slow
def test_a_retried_pod_resumes_scst_from_the_checkpoint_location(
    pipeline_dirs, ce_run, uninterrupted, tmp_path, monkeypatch
):
    """An SCST phase killed in its epoch 2, then a fresh pod: an EMPTY output folder and the
    same checkpoint_uri. It ends with the uninterrupted weights and gets the CE model back."""
    location = str(tmp_path / "checkpoints" / "run-1")
    args = (pipeline_dirs["dataset"], pipeline_dirs["vocab_file"], pipeline_dirs["features"])
    real = scst_module._scst_epoch
    with monkeypatch.context() as patch:

        def killed_in_epoch_2(*a):
            if a[-1] == 2:
                raise RuntimeError("pod evicted")
            return real(*a)

        patch.setattr(scst_module, "_scst_epoch", killed_in_epoch_2)
        with pytest.raises(RuntimeError, match="evicted"):
            train(*args, extend(ce_run, tmp_path / "pod-1"), SCST, True, checkpoint_uri=location)
    record = train(*args, tmp_path / "pod-2", SCST, checkpoint_uri=location)
    assert learned(record["history"]) == learned(uninterrupted[1]["history"])
    assert_same_weights(tmp_path / "pod-2", uninterrupted[0])
    assert_same_weights(tmp_path / "pod-2" / "cross_entropy", ce_run)
