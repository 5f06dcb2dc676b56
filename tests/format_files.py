"""Write a dataset in the Flickr8k layout (the real one or generated scenes) out again in each
other caption format ingest reads: a Karpathy split JSON, COCO caption annotations, a CSV or JSONL
of image,caption[,split] rows. Used by tests/test_dataset_formats.py and by tests/test_readme.py
(the files its "Your own data" commands ingest)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from imagelingo.data.flickr8k import locate_layout, parse_split_file, parse_token_file

KARPATHY_SPLIT = {"train": "train", "dev": "val", "test": "test"}


def flickr8k_splits(root: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], Path]:
    """(split -> image names, image -> captions, image folder) of a Flickr8k-layout folder."""
    layout = locate_layout(root)
    splits = {s: parse_split_file(p) for s, p in layout.split_files.items()}
    return splits, parse_token_file(layout.token_file).captions, layout.image_dir


def write_karpathy(root: Path, json_path: Path, restval: int = 0) -> Path:
    """dataset_<name>.json as Karpathy's release has it: one images[] entry per image of the
    split files (the real dataset_flickr8k.json has exactly the 8000 of the official splits), the
    Flickr8k captions as sentences[].raw. The last `restval` train images are marked restval."""
    splits, captions, _ = flickr8k_splits(root)
    images, sentence_id = [], 0
    for split, names in splits.items():
        for position, name in enumerate(names):
            karpathy = KARPATHY_SPLIT[split]
            if split == "train" and position >= len(names) - restval:
                karpathy = "restval"
            sentences = []
            for raw in captions[name]:
                tokens = raw.lower().rstrip(" .").split()
                sentences.append(
                    {"tokens": tokens, "raw": raw, "imgid": len(images), "sentid": sentence_id}
                )
                sentence_id += 1
            images.append(
                {
                    "filename": name,
                    "imgid": len(images),
                    "split": karpathy,
                    "sentences": sentences,
                    "sentids": [s["sentid"] for s in sentences],
                }
            )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    return json_path


def write_coco(root: Path, out: Path) -> Path:
    """COCO as unzipped: annotations/captions_train2017.json for the train split and
    captions_val2017.json for dev + test, images copied into train2017/ and val2017/."""
    splits, captions, image_dir = flickr8k_splits(root)
    sets = {"train2017": splits["train"], "val2017": splits["dev"] + splits["test"]}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    image_id, caption_id = 100, 1
    for name, members in sets.items():
        (out / name).mkdir(exist_ok=True)
        images, annotations = [], []
        for member in members:
            shutil.copyfile(image_dir / member, out / name / member)
            images.append({"id": image_id, "file_name": member, "width": 128, "height": 128})
            for caption in captions[member]:
                annotations.append({"image_id": image_id, "id": caption_id, "caption": caption})
                caption_id += 1
            image_id += 1
        document = {"info": {}, "licenses": [], "images": images, "annotations": annotations}
        (out / "annotations" / f"captions_{name}.json").write_text(json.dumps(document))
    return out


def write_tabular(root: Path, out: Path, suffix: str = ".csv", with_split: bool = True) -> Path:
    """out/captions.csv (or .jsonl), one row per caption, and the images in out/images/."""
    splits, captions, image_dir = flickr8k_splits(root)
    shutil.copytree(image_dir, out / "images", dirs_exist_ok=True)
    rows = [
        {"image": name, "caption": caption, **({"split": split} if with_split else {})}
        for split, names in splits.items()
        for name in names
        for caption in captions[name]
    ]
    path = out / f"captions{suffix}"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if suffix == ".jsonl":
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path
