# The computational complexity of attention: build and test.
#
#   make site    virtual environment in .venv, every notebook executed, the site in _build/html
#   make test    the same set-up, then: lint, unit tests, the timing-heavy notebooks under load
#                (nbval), the full `-n -W` site build, which executes every notebook (a cell error
#                or a cell over 300 s fails it: nbval's check, run once), and the browser test
#                of the built site (what CI runs). `make nbval` runs nbval over every notebook.
#
# Both start from nothing but Python 3.11. torch is installed FIRST and pinned (TORCH), so that
# pip never resolves a multi-GB CUDA build while installing the rest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is a CPU wheel on this machine's disk. Elsewhere, to avoid a CUDA download:
#   make site TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BOOK_FLAGS ?= -n -W --keep-going
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.md))

# The tiny-Shakespeare corpus sits in ../shared/data when this checkout has one.
ifneq ($(wildcard $(CURDIR)/../shared/data),)
export ATTNBOOK_DATA ?= $(abspath $(CURDIR)/../shared/data)
endif
export PYTHONHASHSEED := 0
# Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs, torch's two
# threads spin-waiting for each other against a busy core slowed one notebook cell beyond 300 s (in a
# `make test` run with two CPU-bound processes alongside); a reader's own setting wins.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv site build colab notebooks pdf test lint unit nbval nbval-loaded browser chromium clean gpu

help:
	@echo "make site   build the book into _build/html (every notebook executed)"
	@echo "make test   unit tests, nbval over every notebook, the -n -W build, the browser test"
	@echo "make colab  rewrite notebooks/*.ipynb, the readable copies Colab opens (commit them)"
	@echo "make pdf    the whole book as one PDF, _build/html/attnbook.pdf (after make site)"
	@echo "make gpu    the GPU edition: every suite on CUDA, results stored in attnbook/results (<= 15 min)"
	@echo "make clean  remove _build"

# ---------------------------------------------------------------- environment
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install -e ".[book,test]"
	$(BIN)/python -c "import torch, attnbook; print('torch', torch.__version__, '| attnbook', attnbook.__file__)"
	touch $@

venv: $(BIN)/.installed

# ---------------------------------------------------------------- the site
# notebooks/NN_*.ipynb are committed: the readable copies that the site's Colab button opens
# (includes inlined, exercises with collapsed solutions, citations as text; book/_ext/colab.py).
# tests/test_colab.py fails when one is stale: after editing a notebooks/*.md, run `make colab`.
colab: venv
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks/NN_*.md found"; exit 1; }
	$(BIN)/python book/_ext/colab.py

notebooks: colab

build: venv
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)
	@test -f _build/html/index.html || { echo "no _build/html/index.html: the build failed"; exit 1; }
	$(MAKE) --no-print-directory pdf

# The PDF: the built pages joined into one HTML page (book/_ext/pdf.py), printed by the same
# Debian Chromium that the browser test uses. Needs a built site; `make build` runs it.
pdf: venv chromium
	@test -f _build/html/index.html || { echo "build the site first (make site)"; exit 1; }
	$(BIN)/python book/_ext/pdf.py _build/html

site: build
	@echo "The site is in _build/html (open _build/html/index.html)."

# ---------------------------------------------------------------- tests
# pytest exits 5 when it collects nothing; each step below treats that as a failure.
define no_empty_pytest
rc=0; $(1) || rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: $(1)"; exit 1; fi; exit $$rc
endef

chromium:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "installing Debian's chromium and chromedriver for the browser test and the PDF"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core poppler-utils; \
	fi
	@if ! command -v pdftotext >/dev/null; then \
	  echo "installing poppler-utils (pdftotext) for the PDF check"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends poppler-utils; \
	fi

# ruff (configured in pyproject.toml, line length 100) over the package, the tests and the extensions
lint: venv
	$(BIN)/ruff check attnbook tests book/_ext
	$(BIN)/ruff format --check attnbook tests book/_ext

unit: venv
	$(call no_empty_pytest,$(BIN)/pytest tests -m "not browser" -q -p no:cacheprovider)

nbval: venv
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks/NN_*.md found"; exit 1; }
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	for f in $(NOTEBOOKS); do $(BIN)/jupytext --quiet --to ipynb "$$f" -o "$$tmp/$$(basename "$${f%.md}").ipynb"; done; \
	$(call no_empty_pytest,$(BIN)/pytest --nbval-lax --nbval-cell-timeout=300 -p no:cacheprovider -q "$$tmp")

# The timing-heavy sections again, while two CPU-bound processes compete for the cores: their claims rest
# on stored runs and counts, so a busy machine must not break them (the book's measurement policy).
LOADED_NOTEBOOKS := $(addprefix notebooks/,01b_attention_vs_rnn.md 02b_crossover.md 04e_linear.md \
	04z_measured.md 07b_elementwise_cost.md)
nbval-loaded: venv
	tmp=$$(mktemp -d); \
	$(BIN)/python -c "while True: pass" & p1=$$!; $(BIN)/python -c "while True: pass" & p2=$$!; \
	trap 'kill $$p1 $$p2 2>/dev/null; rm -rf "$$tmp"' EXIT; \
	for f in $(LOADED_NOTEBOOKS); do $(BIN)/jupytext --quiet --to ipynb "$$f" -o "$$tmp/$$(basename "$${f%.md}").ipynb"; done; \
	$(call no_empty_pytest,$(BIN)/pytest --nbval-lax --nbval-cell-timeout=600 -p no:cacheprovider -q "$$tmp")

browser: venv chromium
	$(call no_empty_pytest,$(BIN)/pytest tests/test_site.py -m browser -q -p no:cacheprovider)

test: venv chromium
	@start=$$(date +%s); \
	for step in lint unit nbval-loaded build browser; do \
	  t0=$$(date +%s); $(MAKE) --no-print-directory $$step; \
	  echo "== make $$step: $$(( $$(date +%s) - t0 )) s"; \
	done; \
	echo "== make test: all steps passed in $$(( $$(date +%s) - start )) s"

# The one-command GPU edition (attnbook/bench/gpu.py): prints its plan, runs every suite on CUDA within
# 15 minutes and stores attnbook/results/*-cuda.json; without CUDA it refuses (exit code 2).
gpu: venv
	$(BIN)/python -m attnbook gpu

clean:
	rm -rf _build
