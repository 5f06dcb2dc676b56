"""A retried train pod resumes: train mirrors its checkpoint and best weights to `checkpoint_uri`
(a folder, or s3:// on moto's real S3 API) every epoch; an attempt that starts with an EMPTY
output folder (a fresh pod) and the same checkpoint_uri continues after the last finished epoch,
and ends with exactly the weights of an uninterrupted run. Also: the data fingerprint that keys
ingest's cache."""

import boto3
import pytest
from trained import assert_same_weights

import imagelingo.train as train_module
from imagelingo.errors import ImageLingoError
from imagelingo.storage import fingerprint
from imagelingo.train import TrainConfig, train

pytestmark = pytest.mark.slow  # every test trains or starts moto's S3 server
CONFIG = TrainConfig(
    seed=3, epochs=3, batch_size=32, lr=1e-3, lr_decay=1.0, patience=3, scst_epochs=0
)


def _killed_in_epoch(monkeypatch, epoch_to_fail: int):
    real = train_module._train_epoch

    def epoch(decoder, optimizer, samples, store, config, epoch, **where):  # device, world
        if epoch == epoch_to_fail:
            raise RuntimeError("pod evicted")  # what a killed pod looks like to the next attempt
        return real(decoder, optimizer, samples, store, config, epoch, **where)

    monkeypatch.setattr(train_module, "_train_epoch", epoch)


@pytest.fixture(scope="module")
def uninterrupted(pipeline_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    record = train(
        pipeline_dirs["dataset"],
        pipeline_dirs["vocab_file"],
        pipeline_dirs["features"],
        out,
        CONFIG,
    )
    return out, record


@pytest.mark.parametrize("store", ["folder", "s3"])
def test_a_fresh_attempt_resumes_from_the_checkpoint_location(
    store, pipeline_dirs, uninterrupted, tmp_path, monkeypatch, request
):
    if store == "s3":
        request.getfixturevalue("s3_server")
        boto3.client("s3").create_bucket(Bucket="ckpt")
        location = "s3://ckpt/imagelingo/run-1"
    else:
        location = str(tmp_path / "checkpoints" / "run-1")
    args = (pipeline_dirs["dataset"], pipeline_dirs["vocab_file"], pipeline_dirs["features"])
    with monkeypatch.context() as patch:
        _killed_in_epoch(patch, 3)
        with pytest.raises(RuntimeError, match="evicted"):
            train(*args, tmp_path / "attempt-1", CONFIG, checkpoint_uri=location)
    # attempt 2: a new pod, an empty output folder, the same checkpoint location
    calls = []
    real = train_module._train_epoch
    monkeypatch.setattr(
        train_module,
        "_train_epoch",
        lambda *a, **where: calls.append(a[-1]) or real(*a, **where),
    )
    record = train(*args, tmp_path / "attempt-2", CONFIG, checkpoint_uri=location)
    assert calls == [3]  # epochs 1 and 2 came from the checkpoint
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    expected_dir, expected = uninterrupted
    assert record["best_val_bleu4"] == expected["best_val_bleu4"]
    assert_same_weights(tmp_path / "attempt-2", expected_dir)


def test_no_checkpoint_yet_starts_from_scratch(pipeline_dirs, tmp_path):
    args = (pipeline_dirs["dataset"], pipeline_dirs["vocab_file"], pipeline_dirs["features"])
    one = TrainConfig(seed=3, epochs=1, batch_size=32, lr_decay=1.0, scst_epochs=0)
    record = train(*args, tmp_path / "m", one, checkpoint_uri=str(tmp_path / "empty"))
    assert [h["epoch"] for h in record["history"]] == [1]
    assert (tmp_path / "empty" / "checkpoint.pt").is_file()


def test_fingerprint_changes_with_the_data_and_only_then(tmp_path, s3_server):
    folder = tmp_path / "flickr8k"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.jpg").write_bytes(b"one")
    (folder / "Flickr8k.token.txt").write_text("a.jpg#0\ta dog\n")
    first = fingerprint(str(folder))
    assert first == fingerprint(str(folder)) and first.startswith("dir:")
    (folder / "Flickr8k.token.txt").write_text("a.jpg#0\ta cat\n")
    assert fingerprint(str(folder)) != first
    # a DVC-tracked folder: the pointer's md5, without reading the data
    (tmp_path / "flickr8k.dvc").write_text("outs:\n- md5: abc123.dir\n  path: flickr8k\n")
    assert fingerprint(str(folder)) == "dvc:abc123.dir"
    # an S3 prefix: its listing (key, size, ETag)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="f8k/images/a.jpg", Body=b"one")
    before = fingerprint("s3://data/f8k")
    assert before.startswith("s3:") and before == fingerprint("s3://data/f8k")
    s3.put_object(Bucket="data", Key="f8k/images/a.jpg", Body=b"two")
    assert fingerprint("s3://data/f8k") != before
    with pytest.raises(ImageLingoError, match="no objects"):
        fingerprint("s3://data/nothing-here")
    assert fingerprint("synthetic") == "synthetic"
