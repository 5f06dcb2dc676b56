from kfp import dsl

from components.images import TRAINING_IMAGE


@dsl.component(base_image=TRAINING_IMAGE, install_kfp_package=False)
def fingerprint(source: str) -> str:
    """What the run's data is (imagelingo.storage.fingerprint: the DVC md5, the S3 listing's hash,
    a folder's content hash, or the source string for generated and fixed public data). The
    pipeline never caches this task and feeds its answer to ingest, so KFP's cache key for ingest
    (its inputs) changes exactly when the data does, wherever the run was started."""
    from imagelingo.storage import fingerprint as data_fingerprint

    return data_fingerprint(source)
