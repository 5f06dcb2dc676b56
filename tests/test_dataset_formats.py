"""Ingest reads a Karpathy split JSON, COCO caption annotations and CSV/JSONL image,caption rows
as it reads the Flickr8k layout: same records, same counting and naming of what it leaves out,
one line naming the file and record for a malformed file.

The files are written from a small generated dataset in the Flickr8k layout (tests/format_files.py),
so each format's ingest can be compared with the Flickr8k-layout ingest of the same data.
"""

import json
import shutil
from pathlib import Path

import pytest
from conftest import FLICKR8K, needs_flickr8k
from format_files import flickr8k_splits, write_coco, write_karpathy, write_tabular

from imagelingo.cli import main
from imagelingo.data.dataset import load_records
from imagelingo.data.formats import read_source
from imagelingo.data.listing import hash_split
from imagelingo.data.synthetic import generate_synthetic
from imagelingo.errors import ImageLingoError
from imagelingo.ingest import IngestConfig, ingest
from imagelingo.orchestration import STAGES
from imagelingo.storage import fingerprint

IMAGES = 40  # generate_synthetic's shares: 28 train, 6 dev, 6 test


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("raw") / "flickr8k", IMAGES, seed=2)


@pytest.fixture(scope="module")
def flickr8k_records(raw, tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    out = tmp_path_factory.mktemp("flickr8k-ingest")
    ingest(str(raw), out / "ds", out / "cache")
    return by_image(out / "ds")


def by_image(dataset: Path) -> dict[str, tuple[str, list[str]]]:
    return {r.image: (r.split, r.captions) for r in load_records(dataset)}


def run(source, tmp_path, images=None, **settings) -> dict:
    return ingest(
        str(source),
        tmp_path / "ds",
        tmp_path / "cache",
        IngestConfig(**settings),
        None,
        False,
        images,
    )


def one_line_error(call, *match: str) -> str:
    with pytest.raises(ImageLingoError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for text in match:
        assert text in message, message
    return message


# --- Karpathy split JSON --------------------------------------------------------------------


def test_karpathy_json_gives_the_records_of_the_flickr8k_layout(raw, flickr8k_records, tmp_path):
    json_path = write_karpathy(raw, tmp_path / "karpathy" / "dataset_flickr8k.json")
    record = run(json_path, tmp_path, images=raw / "images")
    assert record["inputs"]["format"] == "karpathy"
    assert record["counts"]["images"] == {"train": 28, "dev": 6, "test": 6}
    assert by_image(tmp_path / "ds") == flickr8k_records


@needs_flickr8k
def test_karpathy_json_of_real_flickr8k_gives_exactly_the_official_splits(tmp_path):
    """Karpathy's dataset_flickr8k.json is not available offline: the JSON is built here from
    the token and split files as his release has it (the 8000 images of the official splits,
    val for dev, the token file's captions as sentences[].raw). Compared as listings, what each
    reader sends to which split with which captions: the image decoding after that is the same
    code for both and would take minutes on 8000 images twice."""
    json_path = write_karpathy(FLICKR8K, tmp_path / "dataset_flickr8k.json")
    _, karpathy = read_source(json_path, FLICKR8K / "images", "train", 0.1, 0.1)
    _, layout = read_source(FLICKR8K, None, "train", 0.1, 0.1)
    splits, _, _ = flickr8k_splits(FLICKR8K)
    for split in ("train", "dev", "test"):
        names = [i.name for i in karpathy.images if i.split == split]
        assert names == splits[split]
    assert len(karpathy.images) == 8000
    assert [(i.split, i.name, i.captions) for i in karpathy.images] == [
        (i.split, i.name, i.captions) for i in layout.images
    ]


@pytest.mark.parametrize(
    "restval_split, images, skipped",
    [
        (None, {"train": 28, "dev": 6, "test": 6}, {}),  # params.yaml's default: train
        ("dev", {"train": 25, "dev": 9, "test": 6}, {}),
        ("skip", {"train": 25, "dev": 6, "test": 6}, {"restval image": 3}),
    ],
)
def test_restval_joins_train_unless_told_otherwise(raw, tmp_path, restval_split, images, skipped):
    json_path = write_karpathy(raw, tmp_path / "dataset_flickr8k.json", restval=3)
    settings = {"restval_split": restval_split} if restval_split else {}
    record = run(json_path, tmp_path, images=raw / "images", **settings)
    assert record["counts"]["images"] == images
    assert record["counts"]["skipped_by_reason"] == skipped


def test_karpathy_folder_with_images_beside_the_json_needs_no_option(raw, tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(raw / "images", folder / "images")
    write_karpathy(raw, folder / "dataset_mine.json")
    record = run(folder, tmp_path)  # the folder: its one dataset_*.json, images/ beside it
    assert record["inputs"]["format"] == "karpathy"
    assert sum(record["counts"]["images"].values()) == IMAGES


def test_karpathy_filepath_is_the_images_subfolder_and_is_kept(raw, tmp_path):
    """COCO's dataset_coco.json names images as filepath (train2014, val2014) + filename."""
    names = sorted(p.name for p in (raw / "images").iterdir())
    folder = tmp_path / "coco2014"
    entries = []
    for index, name in enumerate(names[:12]):
        subfolder, split = (
            ("train2014", "train") if index < 8 else ("val2014", "val test".split()[index % 2])
        )
        (folder / subfolder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(raw / "images" / name, folder / subfolder / name)
        sentences = [{"raw": f"picture {index} ."}]
        entries.append(
            {"filepath": subfolder, "filename": name, "split": split, "sentences": sentences}
        )
    (folder / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    record = run(folder / "dataset_coco.json", tmp_path)
    assert record["counts"]["images"] == {"train": 8, "dev": 2, "test": 2}
    stored = by_image(tmp_path / "ds")
    assert stored[f"val2014/{names[8]}"] == ("dev", ["picture 8 ."])
    assert (tmp_path / "ds" / "images" / "val2014" / names[8]).is_file()


def test_karpathy_entries_left_out_are_counted_and_named(raw, tmp_path, caplog):
    json_path = write_karpathy(raw, tmp_path / "dataset_flickr8k.json")
    data = json.loads(json_path.read_text())
    first, second, third = (e["filename"] for e in data["images"][:3])
    data["images"].append(dict(data["images"][0]))  # listed twice
    data["images"][1]["sentences"] = [{"raw": "  "}]  # only an empty caption
    data["images"][2]["filename"] = "missing.jpg"  # no such file
    json_path.write_text(json.dumps(data))
    record = run(json_path, tmp_path, images=raw / "images")
    assert record["counts"]["skipped_by_reason"] == {
        "listed again": 1,
        "no captions": 1,
        "image file missing": 1,
    }
    assert record["counts"]["skipped_caption_lines"] == {"empty caption": 1}
    assert record["skipped_lines"] == [
        {"line": f"{json_path} images[1].sentences[0]", "reason": "empty caption"}
    ]
    reasons = {s["image"]: s["reason"] for s in record["skipped"]}
    assert reasons[first] == f"listed again (images[0] and images[{IMAGES}])"
    assert reasons[second] == "no captions (images[1])"
    assert reasons["missing.jpg"] == "image file missing"
    assert third not in by_image(tmp_path / "ds")
    assert "missing.jpg" in caplog.text


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: "{not json", "line 1 column 2: not valid JSON"),
        (lambda d: {"dataset": "x"}, "expected a Karpathy split JSON, an object with images[]"),
        (lambda d: d["images"][3].pop("filename") and d, "images[3].filename: expected an image"),
        (lambda d: d["images"][2].update(split="holdout") or d, "images[2].split: expected train"),
        (lambda d: d["images"][4]["sentences"].append("x") or d, "images[4].sentences[5]: expec"),
        (
            lambda d: d["images"][5].update(filename="../etc/passwd") or d,
            "images[5].filename: expected a",
        ),
        (lambda d: {**d, "annotations": []}, "captions_<set>.json"),
    ],
)
def test_malformed_karpathy_json_is_one_line_naming_file_and_record(raw, tmp_path, edit, expected):
    json_path = write_karpathy(raw, tmp_path / "dataset_flickr8k.json")
    edited = edit(json.loads(json_path.read_text()))
    json_path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    one_line_error(
        lambda: run(json_path, tmp_path, images=raw / "images"), str(json_path), expected
    )


# --- COCO caption annotations ---------------------------------------------------------------


def test_coco_train_is_train_and_val_is_divided_between_dev_and_test(
    raw, flickr8k_records, tmp_path
):
    coco = write_coco(raw, tmp_path / "coco")
    record = run(coco, tmp_path)
    assert record["inputs"]["format"] == "coco"
    stored = by_image(tmp_path / "ds")
    assert {name: captions for name, (_, captions) in stored.items()} == {
        name: captions for name, (_, captions) in flickr8k_records.items()
    }
    train = {name for name, (split, _) in flickr8k_records.items() if split == "train"}
    assert {name for name, (split, _) in stored.items() if split == "train"} == train
    for name, (split, _) in stored.items():
        if name not in train:  # val2017: by a hash of the name, halves by default
            assert split == hash_split(name, 0.5, 0.5)
    assert record["counts"]["images"]["dev"] + record["counts"]["images"]["test"] == 12
    assert record["counts"]["images"]["dev"] > 0 and record["counts"]["images"]["test"] > 0


def test_coco_val_proportion_follows_the_dev_and_test_fractions(raw, tmp_path):
    coco = write_coco(raw, tmp_path / "coco")
    listing = {}
    for dev_fraction in (0.05, 0.1, 0.15):
        _, found = read_source(coco, None, "train", dev_fraction, 0.1)
        listing[dev_fraction] = sum(i.split == "dev" for i in found.images)
    assert listing[0.05] <= listing[0.1] <= listing[0.15]
    assert listing[0.05] < listing[0.15]


def test_one_coco_annotation_file_is_read_with_its_image_folder(raw, tmp_path):
    coco = write_coco(raw, tmp_path / "coco")
    fmt, listing = read_source(
        coco / "annotations" / "captions_train2017.json", None, "train", 0.1, 0.1
    )
    assert fmt == "coco" and len(listing.images) == 28
    assert {i.path.parent for i in listing.images} == {coco / "train2017"}


def test_coco_rows_and_images_left_out_are_counted_and_named(raw, tmp_path):
    coco = write_coco(raw, tmp_path / "coco")
    val = coco / "annotations" / "captions_val2017.json"
    data = json.loads(val.read_text())
    data["annotations"].append({"image_id": 999999, "id": 1, "caption": "A lost caption ."})
    lonely = data["images"][0]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != lonely["id"]]
    data["annotations"][0]["caption"] = " "
    val.write_text(json.dumps(data))
    record = run(coco, tmp_path)
    assert record["counts"]["skipped_by_reason"] == {
        "caption for an image_id not in images[]": 1,
        "no captions": 1,
    }
    assert record["counts"]["skipped_caption_lines"] == {"empty caption": 1}
    assert record["skipped_lines"] == [{"line": f"{val} annotations[0]", "reason": "empty caption"}]
    reasons = {s["image"]: s["reason"] for s in record["skipped"]}
    last = len(data["annotations"]) - 1
    assert (
        reasons["image_id 999999"]
        == f"caption for an image_id not in images[] (annotations[{last}])"
    )
    assert reasons[lonely["file_name"]] == "no captions (in captions_val2017.json)"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda d: d["annotations"][1].pop("caption") and d, "annotations[1]: expected an object"),
        (lambda d: d["images"][2].pop("id") and d, "images[2]: expected an object with id"),
        (lambda d: {"images": d["images"]}, "expected a list annotations[]"),
    ],
)
def test_malformed_coco_file_is_one_line_naming_file_and_record(raw, tmp_path, edit, expected):
    coco = write_coco(raw, tmp_path / "coco")
    val = coco / "annotations" / "captions_val2017.json"
    val.write_text(json.dumps(edit(json.loads(val.read_text()))))
    one_line_error(lambda: run(coco, tmp_path), str(val), expected)


def test_coco_file_whose_name_gives_no_split_is_refused(raw, tmp_path):
    coco = write_coco(raw, tmp_path / "coco")
    shutil.copy(
        coco / "annotations" / "captions_val2017.json",
        coco / "annotations" / "captions_test2017.json",
    )
    one_line_error(lambda: run(coco, tmp_path), "captions_test2017.json", "captions_train<year>")


# --- CSV / JSONL of image,caption[,split] ---------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_with_a_split_give_the_records_of_the_flickr8k_layout(
    raw, flickr8k_records, tmp_path, suffix
):
    table = write_tabular(raw, tmp_path / "table", suffix)
    record = run(table, tmp_path)
    assert record["inputs"]["format"] == "tabular"
    assert by_image(tmp_path / "ds") == flickr8k_records


def test_rows_without_a_split_are_split_by_a_hash_of_the_image_name(
    raw, flickr8k_records, tmp_path
):
    write_tabular(raw, tmp_path / "table", ".jsonl", with_split=False)
    record = run(tmp_path / "table", tmp_path, dev_fraction=0.15, test_fraction=0.15)  # the folder
    stored = by_image(tmp_path / "ds")
    assert {n: c for n, (_, c) in stored.items()} == {
        n: c for n, (_, c) in flickr8k_records.items()
    }
    assert all(split == hash_split(name, 0.15, 0.15) for name, (split, _) in stored.items())
    assert record["counts"]["images"] == {"train": 26, "dev": 7, "test": 7}


def test_a_new_image_leaves_the_others_in_their_split(raw, tmp_path):
    """The point of splitting by a hash: next week's rows do not move this week's test images."""
    path = write_tabular(raw, tmp_path / "table", ".csv", with_split=False)
    _, before = read_source(path, None, "train", 0.1, 0.1)
    shutil.copy(path.parent / "images" / before.images[0].name, path.parent / "images" / "new.jpg")
    with open(path, "a") as handle:
        handle.write("new.jpg,A new picture .\n")
    _, after = read_source(path, None, "train", 0.1, 0.1)
    assert [(i.name, i.split) for i in after.images][:-1] == [
        (i.name, i.split) for i in before.images
    ]


def test_captions_file_with_images_elsewhere_takes_the_images_option(raw, tmp_path, capsys):
    path = write_tabular(raw, tmp_path / "table", ".csv")
    shutil.move(path.parent / "images", tmp_path / "photos")
    out = tmp_path / "ds"
    assert main(["ingest", str(path), "--images", str(tmp_path / "photos"), "--out", str(out)]) == 0
    assert len(load_records(out)) == IMAGES
    assert main(["ingest", str(path), "--out", str(tmp_path / "ds2")]) == 2  # no images beside it
    assert "image file missing" in capsys.readouterr().err


def test_table_rows_left_out_are_counted_and_named(raw, tmp_path):
    path = write_tabular(raw, tmp_path / "table", ".csv")
    written = len(path.read_text(encoding="utf-8").splitlines())
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("ghost.jpg,A ghost .,train\n")  # no such image file
        handle.write("silent.jpg,,test\n")  # only an empty caption
        handle.write(f"{sorted(p.name for p in (raw / 'images').iterdir())[0]},,\n")
    record = run(path, tmp_path)
    assert record["counts"]["skipped_by_reason"] == {"image file missing": 1, "no captions": 1}
    assert record["counts"]["skipped_caption_lines"] == {"empty caption": 2}
    assert [p["line"] for p in record["skipped_lines"]] == [
        f"{path} line {written + 2}",  # silent.jpg's, then the last one's
        f"{path} line {written + 3}",
    ]
    assert {s["image"] for s in record["skipped"]} == {"ghost.jpg", "silent.jpg"}
    assert sum(record["counts"]["images"].values()) == IMAGES


@pytest.mark.parametrize(
    "suffix, text, expected",
    [
        (".csv", "picture,caption\na.jpg,A dog .\n", "line 1: expected a header with the columns"),
        (".csv", "image,caption\na.jpg,A dog .,extra\n", "line 2: expected 2 fields"),
        (".csv", "image,caption,split\na.jpg,A dog .,holdout\n", "line 2: expected split train"),
        (".csv", "image,caption,split\na.jpg,A .,train\na.jpg,B .,test\n", "line 3: a.jpg is in"),
        (".csv", "image,caption\n/etc/passwd,A .\n", "line 2 image: expected a path relative"),
        (".jsonl", '{"image": "a.jpg", "caption": "A dog ."}\n{"image": "b.jpg"\n', "line 2: ex"),
        (".jsonl", '{"image": "a.jpg", "text": "A dog ."}\n', 'line 1: expected {"image"'),
    ],
)
def test_malformed_table_is_one_line_naming_file_and_line(tmp_path, suffix, text, expected):
    path = tmp_path / f"captions{suffix}"
    path.write_text(text)
    one_line_error(lambda: run(path, tmp_path), str(path), expected)


# --- naming the source ----------------------------------------------------------------------


def test_a_folder_with_captions_in_two_formats_is_refused_naming_both(raw, tmp_path):
    mixed = shutil.copytree(raw, tmp_path / "mixed")
    write_tabular(raw, mixed, ".csv")
    one_line_error(
        lambda: run(mixed, tmp_path), "more than one format", "captions.csv", "Flickr8k.token.txt"
    )


@pytest.mark.parametrize("name", ["notes.txt", "folder"])
def test_a_source_with_no_captions_is_refused_saying_what_was_expected(tmp_path, name):
    source = tmp_path / name
    source.mkdir() if name == "folder" else source.write_text("hello")
    one_line_error(lambda: run(source, tmp_path), str(source), "expected")


def test_bad_split_fractions_are_refused(raw, tmp_path):
    path = write_tabular(raw, tmp_path / "table", ".csv", with_split=False)
    one_line_error(
        lambda: run(path, tmp_path, dev_fraction=0.6, test_fraction=0.5), "sum is below 1"
    )


def test_fingerprint_of_a_captions_file_changes_with_its_images(raw, tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(raw / "images", folder / "images")
    json_path = write_karpathy(raw, folder / "dataset_mine.json")
    before = fingerprint(str(json_path))
    assert before == fingerprint(str(folder))
    victim = next((folder / "images").iterdir())
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert fingerprint(str(json_path)) != before


def test_s3_prefix_and_s3_captions_file_are_ingested(s3_server, raw, tmp_path):
    import boto3

    from imagelingo.storage import upload_dir

    folder = tmp_path / "mine"
    shutil.copytree(raw / "images", folder / "images")
    write_karpathy(raw, folder / "dataset_mine.json")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="datasets")
    upload_dir(folder, "s3://datasets/karpathy", s3_server)
    for source in ("s3://datasets/karpathy", "s3://datasets/karpathy/dataset_mine.json"):
        out = tmp_path / source.rpartition("/")[2]
        record = ingest(source, out, tmp_path / "cache", s3_endpoint_url=s3_server)
        assert record["inputs"]["format"] == "karpathy"
        assert record["counts"]["images"] == {"train": 28, "dev": 6, "test": 6}


# --- the whole pipeline ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.walkthrough  # the DAG through kfp.local (tests/tiers.py)
def test_the_pipeline_runs_on_a_karpathy_json(tmp_path, capsys, monkeypatch):
    """`imagelingo run --source <Karpathy JSON>`: every stage through kfp.local, on 30 scenes
    and one epoch, up to the quality gate, whose threshold (BLEU-4 1.0) is above what the run
    achieves: package and deploy are skipped (the same run checks both, as each run of the DAG
    costs a minute; tests/test_readme.py runs it through deploy)."""
    monkeypatch.setenv("IMAGELINGO_CACHE", str(tmp_path / "cache"))
    raw = generate_synthetic(tmp_path / "raw", 30, seed=4)
    json_path = write_karpathy(raw, tmp_path / "data" / "dataset_scenes.json")
    shutil.copytree(raw / "images", json_path.parent / "images")
    settings = ["epochs=1", "patience=1", "batch_size=16", "min_score=1.0"]
    args = [a for pair in settings for a in ("--param", pair)]
    root = tmp_path / "kfp"
    assert main(["run", "--source", str(json_path), "--pipeline-root", str(root), *args]) == 0
    rows = {
        line.split()[0]: line.split()[1]
        for line in capsys.readouterr().out.splitlines()
        if line.split() and line.split()[0] in STAGES
    }
    gated = ("package", "deploy")
    assert rows == {stage: "skipped" if stage in gated else "done" for stage in STAGES}
    (metadata,) = root.rglob("dataset/metadata.json")
    ingested = json.loads(metadata.read_text())
    assert ingested["inputs"]["format"] == "karpathy"
    assert ingested["counts"]["images"] == {"train": 21, "dev": 4, "test": 5}
