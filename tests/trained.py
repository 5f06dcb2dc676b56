"""Helpers of the tests that train (test_train, test_scst, test_checkpoint_resume): one training
on the session's synthetic pipeline folders, and "the same weights" bit for bit."""

import torch
from safetensors.torch import load_file

from imagelingo.train import train


def run(dirs, out, config, resume=False):
    """`imagelingo train` on conftest's pipeline_dirs into `out`."""
    return train(dirs["dataset"], dirs["vocab_file"], dirs["features"], out, config, resume)


def weights(model_dir):
    return load_file(model_dir / "decoder.safetensors")


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
