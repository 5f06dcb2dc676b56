"""imagelingo.resume: which setting changes a resumed run refuses, and the inputs digest that
names a training's checkpoint location and its TrainJob."""

from __future__ import annotations

from imagelingo.resume import changed_settings, inputs_digest

TODAY = {"seed": 42, "epochs": 10, "device": "auto", "precision": "bf16", "lr": 1e-3}


def test_epochs_device_and_scst_settings_may_change_on_resume():
    saved = {**TODAY, "epochs": 4, "device": "cuda", "scst_epochs": 0}
    current = {**TODAY, "epochs": 12, "device": "cpu", "scst_epochs": 3}
    assert changed_settings(saved, current, TODAY) == ""


def test_a_changed_setting_is_named_with_both_values():
    assert changed_settings({**TODAY, "lr": 1e-3}, {**TODAY, "lr": 5e-4}, TODAY) == (
        "lr: 0.001 -> 0.0005"
    )


def test_a_checkpoint_older_than_precision_was_trained_in_fp32():
    # written before train.precision existed, when training was fp32: today's default is bf16
    old = {k: v for k, v in TODAY.items() if k != "precision"}
    assert changed_settings(old, {**TODAY, "precision": "fp32"}, TODAY) == ""
    assert changed_settings(old, TODAY, TODAY) == "precision: fp32 -> bf16"


def test_a_setting_newer_than_the_checkpoint_counts_as_todays_default():
    current = {**TODAY, "alpha_c": 1.0}
    assert changed_settings(TODAY, current, {**TODAY, "alpha_c": 1.0}) == ""
    assert changed_settings(TODAY, current, {**TODAY, "alpha_c": 0.5}) == "alpha_c: 0.5 -> 1.0"


def test_the_digest_follows_the_inputs_and_settings_but_not_epochs_or_device(tmp_path):
    dataset, features = tmp_path / "dataset", tmp_path / "features"
    dataset.mkdir(), features.mkdir()
    (dataset / "captions.jsonl").write_text('{"image": "a.jpg", "caption": "a dog"}\n')
    (features / "metadata.json").write_text('{"encoder": "efficientnet_lite0"}')
    vocab = tmp_path / "vocab.json"
    vocab.write_text('{"words": ["a", "dog"]}')

    def digest(**changes):
        return inputs_digest(dataset, vocab, features, {**TODAY, **changes})

    first = digest()
    assert len(first) == 16 and first == digest(epochs=99, device="cuda")
    assert first != digest(seed=1)
    vocab.write_text('{"words": ["a", "cat"]}')
    assert first != digest()
