from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def ingest(
    source: str,
    data_fingerprint: str,
    synthetic_images: int,
    seed: int,
    restval_split: str,
    dev_fraction: float,
    test_fraction: float,
    dataset: Output[Dataset],
):
    """Any caption source `imagelingo ingest` reads (a Flickr8k, Karpathy JSON, COCO or CSV/JSONL
    folder or file, archive URLs, an s3:// prefix or file, "synthetic") -> validated dataset.
    `data_fingerprint` (the pipeline's never-cached fingerprint task: `imagelingo fingerprint
    SOURCE`) is not read here: it is part of KFP's
    cache key, so the same `source` with new data is ingested again instead of served from
    cache, and everything downstream of it re-runs."""
    import os
    from pathlib import Path

    from imagelingo.ingest import IngestConfig, ingest

    cache = Path(os.environ.get("IMAGELINGO_CACHE", "/tmp/imagelingo-cache"))
    record = ingest(
        source,
        Path(dataset.path),
        cache,
        IngestConfig(
            synthetic_images=synthetic_images,
            seed=seed,
            restval_split=restval_split,
            dev_fraction=dev_fraction,
            test_fraction=test_fraction,
        ),
        os.environ.get("AWS_ENDPOINT_URL"),
    )
    dataset.metadata.update({k: v for k, v in record["counts"].items() if not isinstance(v, dict)})
    dataset.metadata["data_fingerprint"] = data_fingerprint
