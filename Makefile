# Every rule installs what it needs: the virtual environment is built from constraints.txt (the
# lock) the first time, and rebuilt when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLICKR8K ?= ../shared/flickr8k
MODEL ?= runs/f8k/model
# component images: the naming scheme of components/images.py, <REGISTRY>/imagelingo[-deploy]:<TAG>
# (TAG = the package version). After pushing, compile with the digests: README, "On a cluster".
REGISTRY ?= ghcr.io/imagelingo
TAG ?= 0.1.0
IMAGE ?= $(REGISTRY)/imagelingo:$(TAG)
DEPLOY_IMAGE ?= $(REGISTRY)/imagelingo-deploy:$(TAG)
CUDA_IMAGE ?= $(REGISTRY)/imagelingo-cuda:$(TAG)

.PHONY: install demo test test-fast test-walkthroughs cluster-check box-check box-e2e lint format benchmark benchmark-serving soak images run clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[serve,pipeline,data,dev]'
	touch $@

demo: install  ## every stage on generated data; prints BLEU and a caption
	$(BIN)/imagelingo demo

test: install  ## lint, then the test suite less the walkthroughs (under 12 min on 2 cores)
	$(BIN)/ruff check src tests benchmarks components pipelines
	$(BIN)/pytest -q -m "not walkthrough" --durations=10

test-fast: install  ## lint, then the suite less the tests marked slow (they train or start a server)
	$(BIN)/ruff check src tests benchmarks components pipelines
	$(BIN)/pytest -q -m "not slow and not walkthrough" --durations=5

test-walkthroughs: install  ## the README's commands and the DAG runs through kfp.local (~14 min)
	$(BIN)/pytest -q -m walkthrough --durations=10

cluster-check: install  ## the component images rehearsed: their venvs from components/requirements/, compiled components run in them (~4 min)
	IMAGELINGO_CLUSTER_CHECK=1 $(BIN)/pytest -q -s tests/cluster

lint: install
	$(BIN)/ruff check src tests benchmarks components pipelines
	$(BIN)/ruff format --check src tests benchmarks components pipelines

format: install
	$(BIN)/ruff format src tests benchmarks components pipelines
	$(BIN)/ruff check --fix src tests benchmarks components pipelines

benchmark: install  ## the real-data benchmark (~40 min on 2 cores); appends to benchmarks/RESULTS.md
	$(BIN)/python benchmarks/flickr8k_benchmark.py $(FLICKR8K)

benchmark-serving: install  ## serving latency/throughput of both runtimes vs a seed-style baseline
	$(BIN)/python benchmarks/serving_benchmark.py --images $(FLICKR8K)

soak: install  ## each local runtime 10 min at concurrency 8: no error, RSS growth < 5% (~22 min)
	$(BIN)/python benchmarks/soak.py --model $(MODEL) --images $(FLICKR8K)

# KServe's TorchServe runtime (torchserve-kfs:0.9.0): Python 3.9 with its pins, ~5 GB
KFS_VENV ?= .venv-kfs
PYTHON39 ?= $(shell p="$$(pyenv root 2>/dev/null)/versions/3.9.18/bin/python3.9"; test -x "$$p" && echo "$$p" || echo python3.9)

$(KFS_VENV)/.installed: serving/kfs-runtime/requirements.txt
	test -x $(KFS_VENV)/bin/python || $(PYTHON39) -m venv $(KFS_VENV)
	$(KFS_VENV)/bin/pip install --quiet --disable-pip-version-check -r serving/kfs-runtime/requirements.txt
	touch $@

# KServe 0.15.2's storage-initializer code (its image runs `kserve.storage` of that release,
# Python 3.9 here): the rehearsal's init container downloads the model store with it
STORAGE_VENV ?= .venv-storage

$(STORAGE_VENV)/.installed: serving/kfs-runtime/storage-requirements.txt
	test -x $(STORAGE_VENV)/bin/python || $(PYTHON39) -m venv $(STORAGE_VENV)
	$(STORAGE_VENV)/bin/pip install --quiet --disable-pip-version-check -r serving/kfs-runtime/storage-requirements.txt
	touch $@

runtime-rehearsal: install $(KFS_VENV)/.installed $(STORAGE_VENV)/.installed  ## stock kserve-torchserve, and imagelingo-torchserve as the pod KServe builds (Knative, Standard) (~5 min)
	REHEARSAL_COMMAND="make runtime-rehearsal" $(BIN)/python serving/kfs-runtime/rehearse.py --kfs-venv $(KFS_VENV) --storage-venv $(STORAGE_VENV)

box-check: install  ## deploy against Kubeflow 1.11's control plane built from source (Kubernetes v1.34.4, KServe v0.15.2; no node): checks, rollout steps, admission, cert-manager's binaries take the releases' args (~4 min; first build ~30 min on 2 cores; root, Go)
	box/build.sh k8s-v1.34 etcd-v3.6
	box/kserve/build.sh v0.15.2
	box/certmanager/build.sh
	IMAGELINGO_BOX=1 $(BIN)/pytest -q tests/box/test_deploy_on_kserve.py tests/box/test_kserve.py tests/box/test_kingress.py -k "kubeflow-1.11 or kingress"
	IMAGELINGO_BOX=1 $(BIN)/pytest -q tests/box/test_certmanager.py

# The box's rules come after the venvs': make expands a rule's prerequisites where it reads the
# rule, so before them box-e2e asked for "/.installed". BOX_TARGETS: the targets box-e2e runs
# (CI: make box-e2e BOX_TARGETS=kubeflow-1.11; kserve-0.20 by hand: Standard mode only).
BOX_TARGETS ?= kubeflow-1.11 kubeflow-1.10
empty :=
box-e2e: install $(KFS_VENV)/.installed $(STORAGE_VENV)/.installed  ## the box per Kubeflow target (box/build-target.sh, box/up.sh): overlays admitted, deploy as a profile's editor in Standard and Knative mode, captions from a profile pod (~13 min per target warm; root, Go)
	for target in $(BOX_TARGETS); do box/build-target.sh $$target || exit 1; done
	IMAGELINGO_BOX=1 $(BIN)/pytest -q -s tests/box/test_e2e.py -k "$(subst $(empty) $(empty), or ,$(strip $(BOX_TARGETS)))"

images:  ## build the component images (needs a Docker engine); push them with docker push
	docker build -f components/Dockerfile --target training -t $(IMAGE) .
	docker build -f components/Dockerfile --target deploy -t $(DEPLOY_IMAGE) .
	docker build -f components/Dockerfile --target training-cuda -t $(CUDA_IMAGE) .

run: install  ## the whole KFP pipeline on this machine (kfp.local) on synthetic data
	$(BIN)/imagelingo run

clean:
	rm -rf runs mlflow.db mlruns .pytest_cache
