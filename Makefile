# stainvirt: run `make help` for the targets. Every target sets up .venv itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

# Data locations; override on the command line, e.g. `make prepare-data A=my/he B=my/ihc`.
A ?= data/sample/trainA
B ?= data/sample/trainB
TEST_A ?= data/sample/testA
TEST_B ?= data/sample/testB
DATA ?= data/stain.npz
PREPARE_ARGS ?= $(if $(TEST_A),--test-a $(TEST_A)) $(if $(TEST_B),--test-b $(TEST_B))

.DEFAULT_GOAL := help
.PHONY: help setup demo test prepare-data lint clean

help: ## list the targets
	@echo "stainvirt make targets (variables: A, B, TEST_A, TEST_B, DATA):"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 18

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed ## create .venv and install stainvirt with its test tools

demo: $(VENV)/.installed ## run the whole pipeline on the bundled sample data
	$(MAKE) --no-print-directory prepare-data
	@echo "demo finished: data set in $(DATA)"

prepare-data: $(VENV)/.installed ## pack A/B images into $(DATA) (default: the bundled sample)
	$(BIN)/stainvirt prepare --a $(A) --b $(B) $(PREPARE_ARGS) --out $(DATA)

test: $(VENV)/.installed ## lint, then run the test suite (fails if no test ran)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

lint: $(VENV)/.installed ## ruff over the code, tests and benchmarks
	$(BIN)/ruff check .

clean: ## remove generated data and runs (keeps .venv)
	rm -rf data/stain*.npz runs out .pytest_cache
