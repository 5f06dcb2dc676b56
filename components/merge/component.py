from typing import List  # noqa: UP035 (KFP reads typing.List as a list of artifacts)

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def merge(
    dataset: Input[Dataset],
    shards: Input[List[Dataset]],  # noqa: UP006
    features: Output[Dataset],
):
    """The feature shards (dsl.Collected, in shard order) joined into one feature store."""
    from pathlib import Path

    from imagelingo.features import merge_features

    record = merge_features(Path(dataset.path), [Path(s.path) for s in shards], Path(features.path))
    features.metadata.update(
        {
            "encoder": record["encoder"]["name"],
            "shards": len(shards),
            "images_per_second": record["images_per_second"] or 0.0,
        }
    )
