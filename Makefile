# rclib: `make demo` and `make test` are all a newcomer needs. `make` alone lists the targets.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
LOCK   := requirements/lock.txt# every package of the dev + eval environment, exact versions and hashes (`make lock`)
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
OUT    ?= out
DATA   ?= eval-data# local copies of the benchmark datasets (make paper-table; docs/eval.md)
EVAL_ARGS ?=# more rclib eval options for make paper-table, e.g. --processes 8 --batch-size 16 --limit 200
CHROMIUM := /usr/bin/chromium# the browser of tests/browser: Debian's package (Playwright never downloads one)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export MPLBACKEND ?= Agg

.DEFAULT_GOAL := help
.PHONY: help setup lock demo test test-browser lab present report figures bench paper-table train-shapes clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet pip==26.3
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-* && touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

setup: $(STAMP) $(CHROMIUM) ## create .venv from requirements/lock.txt (only when missing or the lock changed), apt's chromium

lock: $(STAMP) ## regenerate requirements/lock.txt from pyproject.toml's ranges (keeps locked versions; UPGRADE=--upgrade moves them)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra eval --python-version 3.11.7 \
		--python-platform x86_64-manylinux_2_28 --generate-hashes -c requirements/constraints.txt $(UPGRADE) -o $(LOCK)

demo: $(STAMP) ## answer the sample questions with all tokens and with RC; figures + result.json in out/
	$(PY) -m rclib demo --out $(OUT)

test: $(STAMP) $(CHROMIUM) ## the whole suite: notebooks executed headless and in JupyterLab in Debian's Chromium
	$(PY) -m pytest

test-browser: $(STAMP) $(CHROMIUM) ## only the browser tests (Playwright + Debian's Chromium), screenshots in out/browser
	$(PY) -m pytest -m browser tests/browser

lab: $(STAMP) ## open jupyter lab on notebooks/ (saving keeps outputs out of the committed notebooks)
	env -u MPLBACKEND JUPYTER_CONFIG_PATH=$(CURDIR)/notebooks/.jupyter $(VENV)/bin/jupyter lab notebooks/

PORT   ?= 8866# make present's port on localhost

present: $(STAMP) ## the explorer (notebook 01) as a web app without code, for a class: Voila on http://localhost:$(PORT)
	env -u MPLBACKEND $(VENV)/bin/voila notebooks/01_explore_one_image.ipynb --port=$(PORT) --no-browser \
		--Voila.ip=127.0.0.1 --strip_sources=True --theme=light

report: $(STAMP) ## run notebooks 02-04 and write them, without code, as one static HTML site: $(OUT)/report/index.html
	$(PY) -m rclib report --out $(OUT)/report

figures: $(STAMP) ## render the notebooks' figures to figures/ from scripts
	$(PY) -m rclib figures --out figures

bench: $(STAMP) ## ShapesWorld benchmark (methods x budgets) to out/bench; rclib speed to benchmarks/results (~10 min)
	$(PY) -m rclib bench --out $(OUT)/bench
	$(PY) -m rclib speed

paper-table: $(STAMP) ## the paper's table on llava-1.5-7b (GPU): datasets into $(DATA) unless offline, rclib eval --paper, table in out/paper-table
	@[ -n "$$HF_HUB_OFFLINE" ] || $(PY) -m rclib eval --paper --fetch --data $(DATA) $(EVAL_ARGS)
	$(PY) -m rclib eval --paper --data $(DATA) --out $(OUT)/paper $(EVAL_ARGS)
	$(PY) -m rclib table $(OUT)/paper --reported --out $(OUT)/paper-table

train-shapes: $(STAMP) ## retrain the embedded ShapesWorld models into out/shapes-models (about 86 min on 2 cores; data/models is never written)
	$(PY) -m rclib train-shapes --out $(OUT)/shapes-models

clean: ## remove outputs and caches (keeps .venv)
	rm -rf $(OUT) figures .pytest_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
