# The kit's entry points. `make reproduce` and `make test` each set up .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.labkit-installed
PRESET ?= default
# pytest workers (pytest-xdist): one per core here; 0 runs the tests in this process
TEST_WORKERS ?= 2
# where `make paper-smoke` runs the models: cpu (CI), or cuda on a GPU machine
DEVICE ?= cpu
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install reproduce test paper-smoke lab bench clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip (not uv/poetry): the pinned torch/torchvision wheels come from this machine's local disk.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --no-cache-dir --progress-bar off -e '.[dev]'
	$(BIN)/labkit install-kernel
	touch $(STAMP)

install: $(STAMP)

## Every study notebook, headless, at the default preset, into reports/ (offline)
reproduce: install
	$(BIN)/labkit reproduce --preset $(PRESET)

## Lint and format checks, then unit tests and nbval over every notebook at the smoke preset (offline)
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=25

## Every study's paper preset (the paper's architectures and data layouts) on small fixture trees, a few steps
## each, random weights under the kit's file names (offline; DEVICE=cuda on a GPU machine)
paper-smoke: install
	HF_HUB_OFFLINE=1 LABKIT_PAPER_SMOKE_DEVICE=$(DEVICE) $(BIN)/python -m pytest -m paper_smoke -n $(TEST_WORKERS) --dist worksteal tests/test_paper_smoke.py

# Jupyter refuses to start as root (a container, an HPC node) unless asked: add the flag only then.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

## JupyterLab with the kit's kernel, on fresh copies of the notebooks in runs/lab/<time>/: autosave and
## executed outputs land in the copies, so exploring never dirties the committed notebooks/
LAB_DIR := runs/lab/$(shell date +%Y%m%d-%H%M%S)
lab: install
	mkdir -p $(LAB_DIR) && cp notebooks/*.ipynb $(LAB_DIR)/
	@echo "JupyterLab on copies in $(LAB_DIR)/ (notebooks/ stays as committed; earlier copies are under runs/lab/)"
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 $(ALLOW_ROOT) runs/lab/

## Speed and memory benchmarks
bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
