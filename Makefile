PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config
PORT ?=

.PHONY: run test bench check lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml plugins/_fold.c
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml plugins/_fold.c examples/fenliu-example-plugin/pyproject.toml
	$(BIN)/pip install -q -e '.[dev]' -e examples/fenliu-example-plugin
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/fenliu serve --config $(CONFIG) --simulate $(if $(PORT),--port $(PORT))

check: $(VENV)/.installed
	$(BIN)/fenliu check --config $(CONFIG)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check router plugins policies adapters bench tests examples
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check router plugins policies adapters bench tests examples
	$(BIN)/lint-imports

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var build *.egg-info
