# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[experiments,test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) experiments/compare.py configs/compare_digits.yaml

test: $(STAMP)
	$(PY) -m ruff check dropout_lab experiments tests benchmarks
	$(PY) -m mypy
	$(PY) -m pytest -n 2 -q -p no:cacheprovider --doctest-modules dropout_lab
	$(PY) -m pytest -n 2 -q

bench: $(STAMP)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) benchmarks/run.py

lint: $(STAMP)
	$(PY) -m ruff check dropout_lab experiments tests benchmarks
	$(PY) -m ruff format --check dropout_lab experiments tests benchmarks
	$(PY) -m mypy

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
