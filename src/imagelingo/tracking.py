"""MLflow, with an embedded default: local sqlite unless MLFLOW_TRACKING_URI says otherwise.

In a pipeline pod on a cluster there is no such default: the pipeline gives every MLflow task the
environment variable CLUSTER_MARKER (the pod's namespace, from the Kubernetes downward API, which
kfp.local never sets), and there a missing MLFLOW_TRACKING_URI is an error, not a sqlite file that
dies with the pod."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from imagelingo.errors import ImageLingoError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
CLUSTER_MARKER = "IMAGELINGO_POD_NAMESPACE"
MLFLOW_SECRET = "imagelingo-mlflow"
EXPERIMENT = "imagelingo"
log = logging.getLogger(__name__)


def tracking_uri(explicit: str | None = None) -> str:
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    namespace = os.environ.get(CLUSTER_MARKER)
    if namespace:
        raise ImageLingoError(
            f"MLFLOW_TRACKING_URI is not set in this pipeline pod (namespace {namespace}): create "
            f"the Secret {MLFLOW_SECRET} with key MLFLOW_TRACKING_URI in that namespace "
            "(README, 'On a cluster'); a run on a cluster never logs to a sqlite file in the pod"
        )
    return DEFAULT_TRACKING_URI


@contextmanager
def mlflow_run(
    uri: str | None = None, run_id: str | None = None, run_name: str | None = None
) -> Iterator:
    """Start (or resume, given `run_id`) a run in the imagelingo experiment; yield mlflow."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    if run_id is not None and not _run_exists(mlflow, run_id):
        # e.g. a model trained elsewhere, evaluated against another tracking store
        log.warning(
            "MLflow run %s (the model's training run) is not in this tracking store; "
            "logging to a new run",
            run_id,
        )
        run_id = None
    if run_id is None:
        mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name):
        yield mlflow


def _run_exists(mlflow, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise  # an unreachable or failing server is an error, not a missing run
    return run.info.lifecycle_stage != "deleted"
