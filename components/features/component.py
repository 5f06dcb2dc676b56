from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def features(
    dataset: Input[Dataset],
    encoder: str,
    batch_size: int,
    num_workers: int,
    torch_threads: int,
    device: str,
    shard: int,
    shards: int,
    accelerator_resource: str,
    accelerator_request: str,
    features: Output[Dataset],
):
    """Shard `shard` of `shards` of the images through the pretrained encoder: fp16 region grids
    per split (the pipeline runs the shards side by side, then `merge` joins them). The GPUs the
    pipeline requested for this pod (accelerator_request of accelerator_resource) must be
    visible, or the task fails. Not named accelerator_count/_type: the SDK would replace inputs
    of those names with a placeholder that KFP 2.5.0 resolves in only about half the runs
    (imagelingo.cluster.kfp_rules.placeholder_input_problems)."""
    from pathlib import Path

    from imagelingo.devices import check_accelerator_request
    from imagelingo.features import FeaturesConfig, extract_features

    check_accelerator_request(accelerator_request, accelerator_resource)
    config = FeaturesConfig(
        encoder=encoder,
        batch_size=batch_size,
        num_workers=num_workers,
        torch_threads=torch_threads,
        device=device,
    )
    record = extract_features(
        Path(dataset.path), Path(features.path), config, shard=(shard, shards)
    )
    features.metadata.update(
        {"encoder": encoder, "images_per_second": record["images_per_second"] or 0.0}
    )
