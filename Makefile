# Two entry points on a fresh clone: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml setup.py trainer/data/_jpeg_region.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PY=$(PY) bash launch/demo.sh

# Test files run in parallel, one pytest worker per core (at most 4). A file's tests share a worker, so
# its fixtures are built once. A process test mostly waits on its trainer processes, so two files share
# two cores well. One test alone: `$(PY) -m pytest tests/unit/test_x.py -k name` (one process).
XDIST := -n auto --maxprocesses=4 --dist loadfile

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) tests

# The edit-test loop: tests/unit only (tests/process starts real trainer processes), under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q $(XDIST) tests/unit

# ruff (pyflakes, pycodestyle, import order, bugbear, pyupgrade) and mypy, configured in pyproject.toml.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

clean:
	rm -rf runs/demo data/demo
