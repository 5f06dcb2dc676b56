from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def package(model: Input[Model], model_store: Output[Model]):
    """Trained model -> KServe model store (model-store/imagelingo.mar + config.properties)."""
    from pathlib import Path

    from imagelingo.serving.package import ServingConfig, package_model

    record = package_model(Path(model.path), Path(model_store.path), ServingConfig())
    model_store.metadata.update({"format": "torchserve-mar", **record["counts"]})
