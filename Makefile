# vapl: the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two cores here: keep torch from oversubscribing them.
export OMP_NUM_THREADS ?= 2
export WANDB_MODE ?= offline

.PHONY: help demo test test-full test-browser browser-deps app lint bench results masks clean install

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,dicom-jpeg,app]"
	$(BIN)/python -c "import torch, torchvision.ops; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'load together')"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install vapl with its dev tools and the browser app (gradio)

demo: $(STAMP) ## train and test VAPL and the Baseline on the built-in demo data, print both
	$(BIN)/python -m vapl.apps.demo

test: $(STAMP) ## run the fast tests
	$(BIN)/python -m pytest -q

test-full: $(STAMP) ## run every test, the slow ones and the browser test too
	@$(MAKE) --no-print-directory browser-deps || echo "no Chromium here: the browser test is skipped"
	$(BIN)/python -m pytest -q -m ""

browser-deps: ## install Chromium from the system's packages (for the browser test), if missing
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }
	@chromium --version 2>/dev/null || chromium-browser --version

test-browser: $(STAMP) browser-deps ## run the test of `vapl app` in a headless Chromium
	$(BIN)/python -m pytest -q -m browser

app: $(STAMP) ## start the browser app on http://127.0.0.1:7860
	$(BIN)/vapl app

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
