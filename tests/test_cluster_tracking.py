"""MLflow on a cluster: the pipeline marks its MLflow tasks' pods (IMAGELINGO_POD_NAMESPACE, from
the downward API; kfp.local never sets it); there a missing MLFLOW_TRACKING_URI is an error that
names the Secret, instead of a sqlite file that dies with the pod. Off the cluster the embedded
sqlite default stays."""

import pytest

from imagelingo.errors import ImageLingoError
from imagelingo.tracking import CLUSTER_MARKER, DEFAULT_TRACKING_URI, tracking_uri


def test_a_cluster_pod_needs_the_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv(CLUSTER_MARKER, "team-a")
    with pytest.raises(ImageLingoError, match="MLFLOW_TRACKING_URI is not set") as error:
        tracking_uri()
    assert "namespace team-a" in str(error.value) and "Secret imagelingo-mlflow" in str(error.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team-a:5000")
    assert tracking_uri() == "http://mlflow.team-a:5000"


def test_off_the_cluster_the_sqlite_default_stays(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(CLUSTER_MARKER, raising=False)
    assert tracking_uri() == DEFAULT_TRACKING_URI
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
