# Two commands do all the set-up on a fresh machine: `make app` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PORT    ?= 8501
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: app test test-fast lint format data browser venv pretrained results bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

# Debian's Fashion-MNIST package (the app and tests fall back to the shipped slice without it).
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; fi

# Debian's Chromium for the real-browser tests (Playwright drives it; nothing is downloaded by Playwright).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; fi

app: venv data
	$(BIN)/python -m explorer --server.port $(PORT)

# Test files run on two processes (pytest-xdist), each file whole on one, so its fixtures are built once.
test: venv data browser lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Lint and format check (ruff, configured in pyproject.toml); `make format` rewrites the files.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-fast: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not browser"

pretrained: venv data
	bash scripts/train_pretrained.sh

# docs/RESULTS.md tables, docs/results.json and the plots, from the trained models
results: venv data
	$(BIN)/python -m benchmarks.results_table
	$(BIN)/python -m benchmarks.static_vs_early_exit

bench: venv data
	for m in policy_replay early_exit_speed certificate_coverage static_vs_early_exit pruning_savings training_overhead; do $(BIN)/python -m benchmarks.$$m || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
