# Every rule installs what it needs: the virtual environment is built from constraints.txt (the
# lock) the first time, and rebuilt when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FLICKR8K ?= ../shared/flickr8k
# component images (defaults match components/images.py; override both together, then
# `IMAGELINGO_IMAGE=... IMAGELINGO_DEPLOY_IMAGE=... imagelingo compile`)
IMAGE ?= ghcr.io/imagelingo/imagelingo:0.1.0
DEPLOY_IMAGE ?= ghcr.io/imagelingo/imagelingo-deploy:0.1.0

.PHONY: install demo test lint format benchmark benchmark-serving images run clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[serve,pipeline,data,dev]'
	touch $@

demo: install  ## every stage on generated data; prints BLEU and a caption
	$(BIN)/imagelingo demo

test: install  ## lint, then the test suite
	$(BIN)/ruff check src tests benchmarks components pipelines
	$(BIN)/pytest -q

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

images:  ## build the component images (needs a Docker engine); push them with docker push
	docker build -f components/Dockerfile --target training -t $(IMAGE) .
	docker build -f components/Dockerfile --target deploy -t $(DEPLOY_IMAGE) .

run: install  ## the whole KFP pipeline on this machine (kfp.local) on synthetic data
	$(BIN)/imagelingo run

clean:
	rm -rf runs mlflow.db mlruns .pytest_cache
