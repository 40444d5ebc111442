# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Strict and offline: warnings (broken references included) are errors; -E rereads every page.
SPHINX := $(PY) -m sphinx -W --keep-going -n -E -q

.PHONY: run test bench lint install clean docs docs-results

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[experiments,test,docs]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) experiments/compare.py configs/compare_digits.yaml

test: $(STAMP)
	$(PY) -m ruff check conftest.py dropout_lab experiments tests benchmarks docs
	$(PY) -m mypy
	$(PY) -m pytest -n 2 -q -p no:cacheprovider --doctest-modules dropout_lab
	$(PY) -m pytest -n 2 -q
	$(SPHINX) -b html docs docs/_build/html

docs: $(STAMP)
	$(SPHINX) -b html docs docs/_build/html

# The docs' result tables and figures, from runs/ and benchmarks/results/ (see docs/contributing.md).
docs-results: $(STAMP)
	$(PY) docs/generate.py

bench: $(STAMP)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(PY) -m ruff check conftest.py dropout_lab experiments tests benchmarks docs
	$(PY) -m ruff format --check conftest.py dropout_lab experiments tests benchmarks docs
	$(PY) -m mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache docs/_build docs/api/generated
