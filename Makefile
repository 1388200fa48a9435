# fusionnet-keras: every target does its own setup (creates .venv and installs the package).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PRESET ?= cpu
RESULTS ?= results
SITE ?= site
export FUSIONNET_DATA_DIR ?= $(CURDIR)/data
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: help install test docs test-jax test-slow check-install pretrained isbi2012 isbi2012-chain isbi2012-cv zebrafish affinity3d benchmark \
	gpu-check clean

help: ## List the targets
	@echo "fusionnet-keras targets (PRESET=cpu|paper, FUSIONNET_DATA_DIR=$(FUSIONNET_DATA_DIR)):"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# tensorflow-cpu (what earlier versions installed) and tensorflow provide the same module: keep one
	$(PY) -m pip uninstall --quiet --yes tensorflow-cpu 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[test,docs,bioimageio]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install the package with its test and docs tools (JAX, bioimage.io included)

test: $(VENV)/.installed ## Run the fast test suite (a few minutes on 2 cores), then build the docs
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory docs

# the manual (docs/) and its API reference from the docstrings; warnings (a broken link or anchor, a
# docstring parameter the signature lacks) fail the build
docs: $(VENV)/.installed ## Build the manual and the API reference into site/ (mkdocs build --strict)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(SITE)

# the tests of the layers, models, precision, predictor, tiling, augmentation and numpy batches again under JAX
JAX_TESTS = tests/test_layers.py tests/test_models.py tests/test_precision.py tests/test_predictor.py \
	tests/test_tiling.py tests/test_augment.py tests/test_batches.py
test-jax: $(VENV)/.installed ## Run the model, predictor and augmentation tests under KERAS_BACKEND=jax
	KERAS_BACKEND=jax $(PY) -m pytest -q $(JAX_TESTS)

check-install: $(VENV)/.installed ## Check that the default install and the cuda/jax/jax-cuda/bioimageio extras resolve (no download)
	$(PY) -m pytest -q -m slow tests/test_install.py

test-slow: $(VENV)/.installed ## Run the slow end-to-end tests (the experiments with tiny presets, a few minutes)
	$(PY) -m pytest -q -m slow

pretrained: $(VENV)/.installed ## Regenerate every shipped model from its card's command (long; NAMES=... for some)
	$(PY) -m fusionnet_keras.pretrained.regenerate $(NAMES)

isbi2012: $(VENV)/.installed ## Train FusionNet and U-Net on ISBI 2012, write results/isbi2012/report.md
	$(PY) experiments/isbi2012/run.py --preset $(PRESET) --out $(RESULTS)/isbi2012

isbi2012-chain: $(VENV)/.installed ## FusionNetW^2 on ISBI 2012 (W^1 vs W^2), write results/isbi2012-chain/report.md
	$(PY) experiments/isbi2012/run.py --preset $(PRESET) --models fusionnet_w2 --out $(RESULTS)/isbi2012-chain

isbi2012-cv: $(VENV)/.installed ## Add the 2016 paper's 3-fold cross-validation to results/isbi2012 (long on CPU)
	$(PY) experiments/isbi2012/run.py --preset $(PRESET) --cv --out $(RESULTS)/isbi2012

zebrafish: $(VENV)/.installed ## Nucleus segmentation + morphology, write results/zebrafish/report.md
	$(PY) experiments/zebrafish/run.py --preset $(PRESET) --out $(RESULTS)/zebrafish

affinity3d: $(VENV)/.installed ## 3-D affinities (UNet3D/FusionNet3D, MALIS vs BCE) + agglomeration on fib-medulla, write results/affinity3d/report.md
	$(PY) experiments/affinity3d/run.py --preset $(PRESET) --out $(RESULTS)/affinity3d

benchmark: $(VENV)/.installed ## Prediction, training, precision (bf16 vs fp32) and start-up benchmarks, MALIS share
	$(PY) benchmarks/predict_throughput.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/precision.py
	$(PY) benchmarks/train_precision.py
	$(PY) benchmarks/malis_share.py
	$(PY) benchmarks/startup.py

gpu-check: $(VENV)/.installed ## The accelerator check: paper-size benchmarks in fp32/bf16 and 200 paper-preset steps
	benchmarks/gpu_check.sh

clean: ## Remove the virtualenv, caches, build files and the built docs (not results/)
	rm -rf $(VENV) build *.egg-info .pytest_cache $(SITE)
