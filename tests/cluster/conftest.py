"""`make cluster-check`: the component images rehearsed in virtual environments (see
image_envs.py). These tests build two fresh environments (~2-3 minutes), so `make test` leaves
them out and `make cluster-check` (which .ci/run runs after `make test`) runs them."""

import os

if os.environ.get("IMAGELINGO_CLUSTER_CHECK") != "1":
    collect_ignore_glob = ["test_*.py"]
