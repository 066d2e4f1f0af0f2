# newsmon: `make run` starts the daemon with the built-in catalogue, `make test` runs the suite.
# Both install exactly the versions in uv.lock (the ones the suite passed with) into .venv.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# uv uses this machine's Python, never one it downloads
export UV_PYTHON_DOWNLOADS := never
# Byte-compile at install: every crawl round starts fresh processes, and where
# PYTHONDONTWRITEBYTECODE is set (common in containers) each of them would otherwise compile
# ~800 modules from source (~3 s of CPU per process).
export UV_COMPILE_BYTECODE := 1
SYNC := $(UV) sync --frozen --python $(PYTHON)
COMPILE := $(BIN)/python -m compileall -q crawler scheduler storage

.PHONY: run test bench lint install lock check-lock doctor clean

# uv itself, pinned, in a virtualenv of its own (`uv sync` keeps .venv exactly to the lock)
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

# quiet: the first screen of `make run` is the product, not the list of the locked packages
install: $(UV)
	@echo "installing the locked dependencies (uv.lock) into $(VENV)"
	@$(SYNC) --quiet
	@$(COMPILE)

run: install
	@test -f newsmon.toml || $(BIN)/newsmon init
	$(BIN)/newsmon doctor
	$(BIN)/newsmon run

doctor: install
	$(BIN)/newsmon doctor

test: $(UV)
	$(SYNC) --extra test
	$(COMPILE)
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(UV)
	$(SYNC) --extra test --extra bench
	$(COMPILE)
	$(BIN)/python bench/run.py

lint: $(UV)
	$(SYNC) --extra test
	$(BIN)/ruff check crawler scheduler storage tests bench
	$(BIN)/mypy

# Re-resolve every dependency to the newest release the ranges in pyproject.toml allow.
# Run `make test` before committing the new uv.lock.
lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# Fails when pyproject.toml and uv.lock disagree (a range changed without `make lock`).
check-lock: $(UV)
	$(UV) lock --check --python $(PYTHON)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
