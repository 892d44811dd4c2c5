# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.13 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
WORKERS ?= 8
# `make test` runs `make lint` (ruff, and mypy --strict on the product package) first; LINT=0 skips it.
# (make has a built-in LINT = lint, so `?=` would never apply: set it unless the command line or the
# environment did.)
ifeq ($(origin LINT),default)
LINT := 1
endif

.PHONY: venv native run test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 13), "Python 3.13+ is required (cryptofeed 3 needs it); found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The hot pipeline modules compiled by mypyc (collector/native.py says why and when they run): rebuilt when a
# source they cover changed. Without a C compiler it says so and the Python source runs.
native: venv
	$(PY) -m collector.native_build --if-stale --optional

run: venv native
	$(PY) supervisor.py --workers $(WORKERS) --simulate

test: venv native $(if $(filter 1,$(LINT)),lint)
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check collector exchange_sim tests bench supervisor.py
	$(PY) -m mypy

bench: venv
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) data logs collector/.native
