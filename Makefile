# The two commands of the README, spelled out. `make demo` and `make test` both install first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test lint format bench

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"

install: $(PY)

demo: install
	$(VENV)/bin/slidestream demo

test: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(PY) -m pytest -q

format:
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .
