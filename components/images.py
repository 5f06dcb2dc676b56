"""The container images the components declare. Override at compile time with environment
variables (then `imagelingo compile`); `make images` builds them from components/Dockerfile."""

import os

VERSION = "0.1.0"
# ingest, vocab, features, train, evaluate, package: torch, timm, nltk, mlflow, the archiver
TRAINING_IMAGE = os.environ.get("IMAGELINGO_IMAGE", f"ghcr.io/imagelingo/imagelingo:{VERSION}")
# deploy: the kserve SDK and boto3 only
DEPLOY_IMAGE = os.environ.get(
    "IMAGELINGO_DEPLOY_IMAGE", f"ghcr.io/imagelingo/imagelingo-deploy:{VERSION}"
)
