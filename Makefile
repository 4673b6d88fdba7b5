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

# Two workers (this is sized for 2-core machines; WORKERS=auto or 1 to change it):
# tests that touch the whole machine share one worker (tests/conftest.py).
WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS)

# The inner loop: everything but the slow tests (fault injection, load, soaks).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check policies agent server tests bench
	$(BIN)/mypy --strict policies agent server

bench: $(STAMP)
	$(BIN)/python bench/engine.py
