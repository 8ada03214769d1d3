# rclib: `make demo` and `make test` are all a newcomer needs. `make` alone lists the targets.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
OUT    ?= out
export MPLBACKEND ?= Agg

.DEFAULT_GOAL := help
.PHONY: help setup demo test lab figures bench train-shapes clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) ## create .venv with the pinned packages (only when missing or pyproject changed)

demo: $(STAMP) ## answer the sample questions with all tokens and with RC; figures + result.json in out/
	$(PY) -m rclib demo --out $(OUT)

test: $(STAMP) ## run the whole test suite, notebooks executed headless
	$(PY) -m pytest

lab: $(STAMP) ## open jupyter lab on notebooks/
	$(VENV)/bin/jupyter lab notebooks/

figures: $(STAMP) ## render the notebooks' figures to figures/ from scripts
	$(PY) -m rclib figures --out figures

bench: $(STAMP) ## ShapesWorld benchmark (methods x budgets) and the filter/compress timings, to out/bench
	$(PY) -m rclib bench --out $(OUT)/bench
	$(PY) benchmarks/compress_speed.py

train-shapes: $(STAMP) ## retrain the embedded ShapesWorld models into data/models (<= 70 min on 2 cores)
	$(PY) -m rclib train-shapes --out data/models

clean: ## remove outputs and caches (keeps .venv)
	rm -rf $(OUT) figures .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
