# vapl: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two cores here: keep torch from oversubscribing them.
export OMP_NUM_THREADS ?= 2
export WANDB_MODE ?= offline

.PHONY: help demo test test-full lint bench results masks clean install

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dicom-jpeg]"
	$(BIN)/python -c "import torch, torchvision.ops; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'load together')"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install vapl with its dev tools

demo: $(STAMP) ## train and test VAPL and the Baseline on the built-in demo data, print both
	$(BIN)/python -m vapl.apps.demo

test: $(STAMP) ## run the fast tests
	$(BIN)/python -m pytest -q

test-full: $(STAMP) ## run every test, the slow ones too
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP) ## performance benchmarks (ratios measured in one run)
	$(BIN)/python -m benchmarks

# Worker processes of one torch thread each; RESULTS_WORKERS=1 on a machine whose cores are busy.
RESULTS_WORKERS ?= 2

results: $(STAMP) ## every method, six data sets, 3 seeds (about an hour on 2 cores): docs/results.md
	$(BIN)/vapl benchmark --config benchmark/results.yaml --launch inprocess \
		--workers $(RESULTS_WORKERS) --threads 1

masks: $(STAMP) ## VAPL's accuracy against N, balanced vs i.i.d. masks (about 35 min): docs/performance.md
	$(BIN)/vapl benchmark --config benchmark/masks.yaml --launch inprocess --workers 1 --threads 1
	$(BIN)/python -m vapl.results.mask_sweep

clean: ## remove the virtual environment, run folders and caches
	rm -rf $(VENV) lightning_logs runs wandb .hypothesis .pytest_cache .ruff_cache build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
