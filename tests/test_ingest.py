"""Ingest: every image decoded, every skip counted with its reason, nothing dropped silently."""

import json
import shutil

import pytest
from conftest import FLICKR8K, SYNTHETIC_IMAGES, needs_flickr8k
from PIL import Image

from imagelingo.cli import main
from imagelingo.data.dataset import load_records
from imagelingo.ingest import IngestConfig, ingest


@pytest.fixture
def raw_copy(synthetic_source, tmp_path):
    return shutil.copytree(synthetic_source, tmp_path / "raw")


def test_synthetic_source_gives_all_splits_with_five_captions_each(tmp_path):
    record = ingest(
        "synthetic", tmp_path / "ds", tmp_path / "cache", IngestConfig(synthetic_images=40)
    )
    records = load_records(tmp_path / "ds")
    assert len(records) == 40
    assert {r.split for r in records} == {"train", "dev", "test"}
    assert all(len(r.captions) == 5 for r in records)
    assert record["counts"]["images"] == {"train": 28, "dev": 6, "test": 6}


def test_synthetic_dataset_is_deterministic(tmp_path):
    config = IngestConfig(synthetic_images=20, seed=3)
    ingest("synthetic", tmp_path / "a", tmp_path / "cache_a", config)
    ingest("synthetic", tmp_path / "b", tmp_path / "cache_b", config)
    assert (tmp_path / "a" / "captions.jsonl").read_text() == (
        tmp_path / "b" / "captions.jsonl"
    ).read_text()


def test_corrupt_image_is_skipped_by_name_with_its_reason(raw_copy, tmp_path, caplog):
    victim = sorted((raw_copy / "images").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    record = ingest(str(raw_copy), tmp_path / "ds", tmp_path / "cache")
    reasons = {s["image"]: s["reason"] for s in record["skipped"]}
    assert reasons[victim.name].startswith("cannot decode image")
    assert record["counts"]["skipped_by_reason"] == {"cannot decode image": 1}
    assert sum(record["counts"]["images"].values()) == SYNTHETIC_IMAGES - 1
    assert victim.name in caplog.text


def test_strict_mode_fails_on_a_corrupt_image(raw_copy, tmp_path):
    victim = sorted((raw_copy / "images").iterdir())[0]
    victim.write_bytes(b"not an image at all")
    with pytest.raises(Exception, match=victim.name):
        ingest(str(raw_copy), tmp_path / "ds", tmp_path / "cache", strict=True)


def test_non_rgb_and_non_jpeg_images_become_rgb_jpegs(raw_copy, tmp_path):
    images = sorted((raw_copy / "images").iterdir())
    Image.open(images[0]).convert("CMYK").save(images[0], format="JPEG")
    Image.open(images[1]).convert("P").save(images[1], format="PNG")  # PNG under a .jpg name
    ingest(str(raw_copy), tmp_path / "ds", tmp_path / "cache")
    for path in images[:2]:
        with Image.open(tmp_path / "ds" / "images" / path.name) as stored:
            assert (stored.format, stored.mode) == ("JPEG", "RGB")


def test_images_in_no_split_and_captions_without_images_are_reported(raw_copy, tmp_path):
    with open(raw_copy / "Flickr8k.token.txt", "a") as handle:
        handle.write("ghost.jpg.1#0\tA ghost .\n")
    shutil.copy(sorted((raw_copy / "images").iterdir())[0], raw_copy / "images" / "extra.jpg")
    with open(raw_copy / "Flickr8k.token.txt", "a") as handle:
        handle.write("extra.jpg#0\tAn extra image .\n")
    record = ingest(str(raw_copy), tmp_path / "ds", tmp_path / "cache")
    assert record["counts"]["skipped_by_reason"] == {
        "caption id without an image file": 1,
        "in no split file": 1,
    }


def test_split_image_without_captions_is_reported(raw_copy, tmp_path):
    with open(raw_copy / "Flickr_8k.trainImages.txt", "a") as handle:
        handle.write("uncaptioned.jpg\n")
    record = ingest(str(raw_copy), tmp_path / "ds", tmp_path / "cache")
    assert {"image": "uncaptioned.jpg", "reason": "in a split file but has no captions"} in record[
        "skipped"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["ingest", "/no/such/dir", "--out", "OUT"], "not a directory"),
        (
            ["features", "--dataset", "DS", "--out", "OUT", "--encoder", "vgg99"],
            "unknown encoder 'vgg99'; expected one of efficientnet_lite0, efficientnet_lite2, "
            "resnet50, resnet101",
        ),
    ],
)
def test_cli_reports_bad_input_in_one_line(args, message, tmp_path, capsys):
    args = [a.replace("OUT", str(tmp_path / "out")).replace("DS", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_names_the_line_without_separator(raw_copy, tmp_path, capsys):
    with open(raw_copy / "Flickr8k.token.txt", "a") as handle:
        handle.write("broken line\n")
    assert main(["ingest", str(raw_copy), "--out", str(tmp_path / "ds")]) == 2
    lines = len((raw_copy / "Flickr8k.token.txt").read_text().splitlines())
    assert f"Flickr8k.token.txt line {lines}: expected" in capsys.readouterr().err


@needs_flickr8k
def test_real_flickr8k_ingests_8000_images_and_reports_the_quirks(tmp_path):
    record = ingest(str(FLICKR8K), tmp_path / "ds", tmp_path / "cache")
    counts = record["counts"]
    assert counts["images"] == {"train": 6000, "dev": 1000, "test": 1000}
    assert counts["captions"] == {"train": 30000, "dev": 5000, "test": 5000}
    assert counts["repaired_caption_lines"] == {"space instead of TAB after caption id": 3}
    assert counts["skipped_by_reason"] == {
        "in no split file": 91,
        "caption id without an image file": 1,
    }
    stored = json.loads((tmp_path / "ds" / "metadata.json").read_text())
    assert len(stored["skipped"]) == 92
