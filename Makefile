# stainvirt: run `make help` for the targets. Every target sets up .venv itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Data locations; override on the command line, e.g. `make prepare-data A=my/he B=my/ihc`.
A ?= data/sample/trainA
B ?= data/sample/trainB
TEST_A ?= data/sample/testA
TEST_B ?= data/sample/testB
DATA ?= data/stain.npz
PREPARE_ARGS ?= $(if $(TEST_A),--test-a $(TEST_A)) $(if $(TEST_B),--test-b $(TEST_B))
# Training: `make train NAME=mine PRESET=paper EPOCHS=50 MINUTES=60`.
NAME ?= cpu
PRESET ?= cpu
EPOCHS ?=
MINUTES ?=
# A resumed run trains on the data set it recorded unless DATA is given explicitly.
TRAIN_DATA = $(if $(filter-out file,$(origin DATA)),--data $(DATA))
TRAIN_ARGS ?= $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(MINUTES),--max-minutes $(MINUTES))
# Translation and evaluation use RUN, by default the run folder under runs/ trained last.
RUN ?= $(shell $(BIN)/python -c 'from stainvirt.rundir import RunDir; r = RunDir.latest("runs"); print(r.path if r else "")' 2>/dev/null)
OUT ?= out
DEMO_MINUTES ?= 10

.DEFAULT_GOAL := help
.PHONY: help setup gpu demo test prepare-data train translate evaluate notebooks notebooks-update lint clean

help: ## list the targets
	@echo "stainvirt make targets (variables: A B TEST_A TEST_B DATA NAME PRESET EPOCHS MINUTES RUN OUT)"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-17s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed ## create .venv and install stainvirt with its test tools

# tensorflow-cpu and tensorflow install the same files: both go first, or removing one
# (a reinstalled tensorflow-cpu, say) would delete files the other still claims.
gpu: $(VENV)/.installed ## swap the CPU-only TensorFlow in .venv for the CUDA build (Linux)
	$(BIN)/pip uninstall --quiet --yes tensorflow-cpu tensorflow
	$(BIN)/pip install --quiet 'tensorflow[and-cuda]>=2.16,<3'
	$(BIN)/python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))"

demo: $(VENV)/.installed ## prepare -> train a few minutes -> translate -> figures, on the sample data
	$(MAKE) --no-print-directory prepare-data
	$(BIN)/stainvirt train --data $(DATA) --out runs/demo --max-minutes $(DEMO_MINUTES) \
	    $(if $(wildcard runs/demo/config.json),,--preset counterstain)
	$(BIN)/stainvirt translate --direction A2B --model runs/demo $(TEST_A) \
	    --out $(OUT)/demo/A2B --figure $(OUT)/demo/A2B_figure.png
	$(BIN)/stainvirt translate --direction B2A --model runs/demo $(TEST_B) \
	    --out $(OUT)/demo/B2A --figure $(OUT)/demo/B2A_figure.png
	@echo
	@echo "demo finished. Open:"
	@echo "  $(OUT)/demo/A2B_figure.png   H&E -> virtual IHC -> back to H&E"
	@echo "  $(OUT)/demo/B2A_figure.png   IHC -> virtual H&E -> back to IHC"
	@echo "  runs/demo/                   the run: a sample grid per epoch, the loss curves, the models"
	@echo "  $(OUT)/demo/A2B/, B2A/       the translated test images"
	@echo "If training stopped at the time budget, 'make demo' again resumes runs/demo."

prepare-data: $(VENV)/.installed ## pack A/B images into $(DATA) (default: the bundled sample)
	$(BIN)/stainvirt prepare --a $(A) --b $(B) $(PREPARE_ARGS) --out $(DATA)

train: $(VENV)/.installed ## train PRESET (cpu) on DATA into runs/NAME; re-run to resume, EPOCHS=N to extend
	$(BIN)/stainvirt train $(TRAIN_DATA) --out runs/$(NAME) --preset $(PRESET) $(TRAIN_ARGS)

translate: $(VENV)/.installed ## translate the sample test tiles with RUN (newest run) into OUT/
	@test -n "$(RUN)" || { echo "error: no run under runs/; run 'make train' first" >&2; exit 1; }
	$(BIN)/stainvirt translate --direction A2B --model $(RUN) $(TEST_A) --out $(OUT)/A2B
	$(BIN)/stainvirt translate --direction B2A --model $(RUN) $(TEST_B) --out $(OUT)/B2A

evaluate: $(VENV)/.installed ## score RUN (newest run) on the sample test tiles against baselines, into OUT/evaluate/
	@test -n "$(RUN)" || { echo "error: no run under runs/; run 'make train' first" >&2; exit 1; }
	$(BIN)/stainvirt evaluate --direction A2B --model $(RUN) --source $(TEST_A) --target $(TEST_B) \
	    --baselines --out $(OUT)/evaluate/A2B
	$(BIN)/stainvirt evaluate --direction B2A --model $(RUN) --source $(TEST_B) --target $(TEST_A) \
	    --baselines --out $(OUT)/evaluate/B2A

notebooks: $(VENV)/.installed ## run the walkthrough notebooks headless; fails if a cell fails
	$(BIN)/python notebooks/run_notebooks.py

notebooks-update: $(VENV)/.installed ## re-run the notebooks and save them with their outputs
	$(BIN)/python notebooks/run_notebooks.py --inplace

test: $(VENV)/.installed ## lint, then run the test suite (fails if no test ran)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

lint: $(VENV)/.installed ## ruff over the code, tests and benchmarks
	$(BIN)/ruff check .

clean: ## remove generated data and runs (keeps .venv)
	rm -rf data/stain*.npz data/stain*.tiles runs out .pytest_cache
