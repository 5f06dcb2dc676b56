"""Feature store at scale: rows read when asked for (not the split loaded), extraction in shards
merged into the store an unsharded run writes."""

import json

import numpy as np
import pytest

from imagelingo.errors import ImageLingoError
from imagelingo.features import (
    FeaturesConfig,
    FeatureStore,
    extract_features,
    merge_features,
    parse_shard,
    shard_names,
)


@pytest.fixture(scope="module")
def small_dataset(pipeline_dirs, tmp_path_factory):
    """The synthetic dataset cut to 7 images per split: sharding with uneven shards, quickly."""
    out = tmp_path_factory.mktemp("small") / "dataset"
    out.mkdir()
    (out / "images").symlink_to(pipeline_dirs["dataset"] / "images")
    kept, lines = {}, []
    for line in (pipeline_dirs["dataset"] / "captions.jsonl").read_text().splitlines():
        split = json.loads(line)["split"]
        if kept.get(split, 0) < 7:
            kept[split] = kept.get(split, 0) + 1
            lines.append(line)
    (out / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return out


CONFIG = dict(batch_size=4, num_workers=0)


def test_shards_merge_into_the_unsharded_store(small_dataset, tmp_path):
    whole = tmp_path / "whole"
    extract_features(small_dataset, whole, FeaturesConfig(**CONFIG))
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, folder in enumerate(shards):
        record = extract_features(small_dataset, folder, FeaturesConfig(**CONFIG), shard=(i, 3))
        assert record["params"]["shard"] == f"{i}/3"
    merged = tmp_path / "merged"
    record = merge_features(small_dataset, shards, merged)
    assert record["images_encoded_this_run"] == 21
    for split in ("train", "dev", "test"):
        assert FeatureStore(merged, split).names == FeatureStore(whole, split).names
        np.testing.assert_allclose(
            np.load(merged / f"{split}.npy"), np.load(whole / f"{split}.npy"), atol=2e-3
        )
    # the merged store is complete for `imagelingo features`: a rerun encodes nothing
    rerun = extract_features(small_dataset, merged, FeaturesConfig(**CONFIG))
    assert rerun["images_encoded_this_run"] == 0


def test_merge_refuses_missing_or_misordered_shards(small_dataset, tmp_path):
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, folder in enumerate(shards):
        extract_features(small_dataset, folder, FeaturesConfig(**CONFIG), shard=(i, 2))
    with pytest.raises(ImageLingoError, match="shard1: holds shard '1/2' .* expected 0/2"):
        merge_features(small_dataset, shards[::-1], tmp_path / "merged")
    with pytest.raises(ImageLingoError, match="shard0: holds shard '0/2' .* expected 0/1"):
        merge_features(small_dataset, shards[:1], tmp_path / "merged")


def test_shards_are_contiguous_and_cover_every_name_once():
    names = [f"{i}.jpg" for i in range(10)]
    parts = [shard_names(names, (i, 4)) for i in range(4)]
    assert [len(p) for p in parts] == [2, 3, 2, 3]
    assert sum(parts, []) == names
    assert shard_names(names[:1], (0, 3)) == [] and shard_names(names, None) == names


@pytest.mark.parametrize("text", ["3", "a/b", "4/4", "-1/2", "0/0"])
def test_bad_shard_is_an_error_that_names_it(text):
    with pytest.raises(ImageLingoError, match="shard"):
        parse_shard(text)


def test_store_reads_rows_when_asked_without_loading_the_split(pipeline_dirs):
    store = FeatureStore(pipeline_dirs["features"], "train")
    assert isinstance(store.array, np.memmap)  # only the header was read
    loaded = FeatureStore(pipeline_dirs["features"], "train", in_memory=True)
    rows = [5, 0, 5, len(store) - 1, 3]  # any order, repeats
    np.testing.assert_array_equal(store.tensor(rows).numpy(), loaded.tensor(rows).numpy())
    lazy = store.lazy(rows)
    assert len(lazy) == 5
    np.testing.assert_array_equal(lazy[1:4].numpy(), loaded.tensor(rows[1:4]).numpy())
    with pytest.raises(IndexError, match="rows must be in"):
        store.tensor([len(store)])


def test_cli_extracts_shards_and_merges_them(small_dataset, tmp_path):
    from imagelingo.cli import main

    shards = [tmp_path / "s0", tmp_path / "s1"]
    for i, folder in enumerate(shards):
        argv = ["-p", "features.num_workers=0", "features", "--dataset", str(small_dataset)]
        assert main([*argv, "--out", str(folder), "--shard", f"{i}/2"]) == 0
    merged = tmp_path / "merged"
    argv = ["features-merge", "--dataset", str(small_dataset), "--out", str(merged), "--shards"]
    assert main([*argv, *map(str, shards)]) == 0
    assert len(FeatureStore(merged, "train")) == 7
