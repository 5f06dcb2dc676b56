"""params.yaml is the one home of defaults: the code's fallbacks agree with it, and overrides are
checked against it."""

import dataclasses

import pytest

from imagelingo.config import apply_overrides, load_params
from imagelingo.errors import ImageLingoError
from imagelingo.train import TrainConfig


def test_train_config_defaults_equal_params_yaml():
    assert load_params()["train"] == dataclasses.asdict(TrainConfig())


def test_serving_config_defaults_equal_params_yaml():
    from imagelingo.serving.package import ServingConfig

    assert load_params()["package"] == dataclasses.asdict(ServingConfig())


def test_demo_overrides_name_real_parameters():
    params = load_params()
    demo = apply_overrides(params, params["demo"])
    assert demo["train"]["epochs"] == params["demo"]["train.epochs"]


def test_override_values_are_parsed_as_yaml():
    params = apply_overrides(load_params(), ["train.lr=0.0005", "evaluate.beam_width=5"])
    assert params["train"]["lr"] == 0.0005
    assert params["evaluate"]["beam_width"] == 5


@pytest.mark.parametrize("override", ["train.lrr=1", "nosection.x=1", "train.lr"])
def test_bad_override_is_an_error_that_names_it(override):
    with pytest.raises(ImageLingoError, match=override.split("=")[0].replace(".", r"\.")):
        apply_overrides(load_params(), [override])
