# Developer entry points. Each target creates .venv when it is missing and installs every package editable.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format install bench fuzz clean

$(STAMP): requirements-dev.txt packages/*/pyproject.toml packages/*/*.pth packages/mlop-server/web/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	cd packages/mlop-server/web && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# two workers (pytest-xdist): half of the suite's time is spent waiting on servers, browsers and child processes
test: lint
	$(BIN)/python -m pytest -n 2

# the server's fuzz tests with a long budget (the suite runs a short one)
fuzz: $(STAMP)
	MLOP_FUZZ_EXAMPLES=2000 MLOP_SCHEMATHESIS_EXAMPLES=500 $(BIN)/python -m pytest -q -p no:cacheprovider --timeout 0 \
		tests/server/test_fuzz.py tests/server/test_fuzz_values.py tests/server/test_schemathesis.py

bench: $(STAMP)
	$(BIN)/python bench/log_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
