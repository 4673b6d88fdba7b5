# Two commands on a fresh clone: `make demo` and `make test`.
# Both create .venv if it is missing and install Warden with every extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[agent,server,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the slow tests (fault injection, load, soaks).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check policies agent server tests bench
	$(BIN)/mypy --strict policies agent server

bench: $(STAMP)
	$(BIN)/python bench/engine.py
