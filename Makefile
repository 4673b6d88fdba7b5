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

# pytest-xdist workers: the tests spend much of their time waiting on child processes,
# servers and the browser, so more workers than cores pays (docs/benchmarks.md).
WORKERS ?= 4

# The whole suite: independent tests on several processes (tests/conftest.py says which
# stay together), then, alone, the few that stop a service the others share or must see
# the machine's own processes.
ALONE := exclusive or whole_machine
# The suite starts about 500 `warden` and `warden-agent` processes: with bytecode compiled
# once here, none of them compiles Warden's modules from source when Python may not write
# bytecode itself (PYTHONDONTWRITEBYTECODE, set on some of these machines): 0.06-0.09 s of
# CPU saved per process.
COMPILE := $(BIN)/python -m compileall -q -j 0 policies agent server tests
test: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -m "not ($(ALONE))" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "$(ALONE)" $(PYTEST_ARGS)

# The inner loop: everything but the slow tests (fault injection, load, soaks).
test-fast: $(STAMP)
	$(COMPILE)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -m "not slow and not ($(ALONE))" \
		$(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check policies agent server tests bench
	$(BIN)/mypy --strict policies agent server

bench: $(STAMP)
	$(BIN)/python bench/engine.py
