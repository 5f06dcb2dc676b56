from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def package(
    model: Input[Model],
    model_name: str,
    batch_size: int,
    max_batch_delay_ms: int,
    min_workers: int,
    max_workers: int,
    response_timeout_s: int,
    max_request_size: int,
    torch_threads: int,
    encoder_precision: str,
    decoder_precision: str,
    model_store: Output[Model],
):
    """Trained model -> KServe model store (model-store/<model_name>.mar + config.properties).
    The settings: params.yaml `package`."""
    from pathlib import Path

    from imagelingo.serving.package import ServingConfig, package_model

    config = ServingConfig(
        model_name=model_name,
        batch_size=batch_size,
        max_batch_delay_ms=max_batch_delay_ms,
        min_workers=min_workers,
        max_workers=max_workers,
        response_timeout_s=response_timeout_s,
        max_request_size=max_request_size,
        torch_threads=torch_threads,
        encoder_precision=encoder_precision,
        decoder_precision=decoder_precision,
    )
    record = package_model(Path(model.path), Path(model_store.path), config)
    model_store.metadata.update({"format": "torchserve-mar", **record["counts"]})
