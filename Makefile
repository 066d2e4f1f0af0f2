# newsmon: `make run` starts the daemon with the built-in catalogue, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test bench lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	@test -f newsmon.toml || $(BIN)/newsmon init
	$(BIN)/newsmon run

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(TEST_STAMP)
	$(BIN)/python bench/run.py

lint: $(TEST_STAMP)
	$(BIN)/ruff check crawler scheduler storage tests bench

clean:
	rm -rf $(VENV) .pytest_cache
