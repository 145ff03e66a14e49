# The two commands of the README: `make run` and `make test`.
# Both bootstrap .venv from requirements.lock on first use; nothing is installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

## Sluice embedded: SQLite file, migrations, provider simulator, HTTP API, worker, demo load.
run: $(STAMP)
	$(BIN)/sluice run

## The whole test suite (PostgreSQL must be running; see README), then lint and types.
## Three pytest processes share the files (each test makes its own databases): on the
## 2-core box two left a fifth of the CPU idle while tests waited on their subprocesses
## (14 min 37 s against 10 min 57 s with three, 2026-12-05); the tests marked serial (a
## PostgreSQL restart) run alone afterwards.
## Sluice's modules are compiled first: the suite starts hundreds of sluice processes (CLI,
## workers, servers), and where PYTHONDONTWRITEBYTECODE is set each would otherwise
## compile every module again (a CLI call: 0.6 s instead of 0.34 s).
test: $(STAMP)
	$(BIN)/python -m compileall -q src
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder -m "not serial"
	$(BIN)/python -m pytest -m serial
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

## Benchmarks against procrastinate and Celery (not part of the tests).
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache sluice.db sluice.db-wal sluice.db-shm
