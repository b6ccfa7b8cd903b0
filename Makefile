# Quick start: `make demo` runs the main job on an embedded loopback server,
# `make test` runs the whole suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck demo bench soak docs tox peer against-source clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check aioconnpool tests bench examples docs/_ext peer dashboards
	$(PY) -m ruff format --check aioconnpool tests bench examples docs/_ext peer dashboards
	$(PY) -m mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check aioconnpool tests bench examples docs/_ext peer dashboards
	$(PY) -m ruff format --check aioconnpool tests bench examples docs/_ext peer dashboards

typecheck: $(STAMP)
	$(PY) -m mypy

demo: $(STAMP)
	$(PY) -m aioconnpool demo

bench: $(STAMP)
	$(PY) bench/run_all.py

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

soak: $(STAMP)
	$(PY) bench/soak.py

tox: $(STAMP)
	$(PY) -m tox

# aiohttp's own client tests, baseline and with PoolConnector swapped in
# (peer/run.py): builds .peer-venv and .peer-cache/ on first use.
peer: $(STAMP)
	$(PY) peer/run.py

# The manual check against an unreleased aiohttp (its 3.15 branch, master):
# `make against-source AIOHTTP_SRC=path/to/aiohttp-tree` builds it in pure
# Python in .source-venv/ and runs our suite there (peer/against_source.py).
# Not in CI: CI reaches only PyPI.
against-source: $(STAMP)
	test -n "$(AIOHTTP_SRC)" || { echo "usage: make against-source AIOHTTP_SRC=path/to/aiohttp"; exit 2; }
	$(PY) peer/against_source.py $(AIOHTTP_SRC)

clean:
	rm -rf $(VENV) .tox .mypy_cache .ruff_cache .pytest_cache .hypothesis \
		.peer-venv .peer-cache .source-venv
