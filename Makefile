# Quick start: `make demo` runs the main job on an embedded loopback server,
# `make test` runs the whole suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck demo bench soak docs tox peer against-source clean

# The accounting core is compiled with mypyc, in place (setup.py), unless
# AIOCONNPOOL_NO_EXTENSIONS=1: then it runs as Python. The tests check that
# the build is the one asked for (tests/test_compiled.py).
ifeq ($(AIOCONNPOOL_NO_EXTENSIONS),1)
export AIOCONNPOOL_EXPECT_COMPILED := 0
else
export AIOCONNPOOL_EXPECT_COMPILED := 1
export AIOCONNPOOL_REQUIRE_EXTENSIONS := 1
endif
BUILT := $(VENV)/.core-built-$(AIOCONNPOOL_EXPECT_COMPILED)

# The dependencies, with the package installed as pure Python...
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	AIOCONNPOOL_NO_EXTENSIONS=1 $(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# ...then the core compiled in place (or its compiled files removed), again
# whenever its source changes: Python imports a compiled module before its
# source, so a stale one would hide an edit (tests/conftest.py refuses one).
$(BUILT): $(STAMP) setup.py aioconnpool/_histogram.py $(wildcard aioconnpool/_core/*.py)
	rm -f $(VENV)/.core-built-* aioconnpool/_core/*.so aioconnpool_core__mypyc*.so
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(BUILT)

install: $(BUILT)

test: $(BUILT)
	$(PY) -m ruff check setup.py aioconnpool tests bench examples docs/_ext peer dashboards
	$(PY) -m ruff format --check setup.py aioconnpool tests bench examples docs/_ext peer dashboards
	$(PY) -m mypy
	$(PY) -m pytest
	# The core's own tests again, on its source (the suite ran the build).
	AIOCONNPOOL_NO_EXTENSIONS=1 AIOCONNPOOL_EXPECT_COMPILED=0 $(PY) -m pytest -q \
		tests/test_core.py tests/test_core_policies.py tests/test_core_stateful.py \
		tests/test_compiled.py

lint: $(STAMP)
	$(PY) -m ruff check setup.py aioconnpool tests bench examples docs/_ext peer dashboards
	$(PY) -m ruff format --check setup.py aioconnpool tests bench examples docs/_ext peer dashboards

typecheck: $(STAMP)
	$(PY) -m mypy

demo: $(BUILT)
	$(PY) -m aioconnpool demo

bench: $(BUILT)
	$(PY) bench/run_all.py

docs: $(BUILT)
	$(PY) -m mkdocs build --strict --site-dir site

soak: $(BUILT)
	$(PY) bench/soak.py

tox: $(BUILT)
	$(PY) -m tox

# aiohttp's own client tests, baseline and with PoolConnector swapped in
# (peer/run.py): builds .peer-venv and .peer-cache/ on first use.
peer: $(BUILT)
	$(PY) peer/run.py

# The manual check against an unreleased aiohttp (its 3.15 branch, master):
# `make against-source AIOHTTP_SRC=path/to/aiohttp-tree` builds it in pure
# Python in .source-venv/ and runs our suite there (peer/against_source.py).
# Not in CI: CI reaches only PyPI.
against-source: $(BUILT)
	test -n "$(AIOHTTP_SRC)" || { echo "usage: make against-source AIOHTTP_SRC=path/to/aiohttp"; exit 2; }
	$(PY) peer/against_source.py $(AIOHTTP_SRC)

clean:
	rm -rf $(VENV) .tox .mypy_cache .ruff_cache .pytest_cache .hypothesis \
		.peer-venv .peer-cache .source-venv build aioconnpool/_core/*.so \
		aioconnpool_core__mypyc*.so
