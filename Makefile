# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_VENV ?= .venv-demo
# Playwright drives Debian's Chromium; it must never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: demo test test-fast lint matrix bench bench-deps browser-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,tasks-db,lint,browser,bench]' nox
	touch $@

## Run the demo: venv, install, migrate SQLite, watched folder, daemon in the foreground, admin on :8000.
demo:
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q --upgrade pip
	$(DEMO_VENV)/bin/pip install -q .
	./scripts/demo $(DEMO_VENV)/bin/python

## Run the whole test suite: lint, types, SQLite, PostgreSQL, browser, version matrix edges.
test: $(VENV)/.installed
	./scripts/test $(PY)

## The unit tests alone (SQLite; no daemon process, no browser), on every core: under a minute.
test-fast: $(VENV)/.installed
	DATABASE_URL= $(PY) -m pytest -p no:cacheprovider -q -n auto -m "not daemon and not browser"

## ruff (lint and format), mypy and the architecture contracts (import-linter, see pyproject.toml).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy inotifier
	$(VENV)/bin/lint-imports

## The version matrix (Python 3.11-3.13 x Django 4.2-6.1), every combination.
matrix: $(VENV)/.installed
	$(VENV)/bin/nox

browser-deps:
	[ -x /usr/bin/chromium ] || (apt-get update -qq && apt-get install -y -qq chromium)

## Benchmarks against raw pyinotify, inotify_simple, watchdog and inotifywait (see bench/).
bench: $(VENV)/.installed bench-deps
	$(PY) bench/run.py $(BENCH_ARGS)

bench-deps:
	command -v inotifywait >/dev/null || (apt-get update -qq && apt-get install -y -qq inotify-tools)

clean:
	rm -rf $(VENV) $(DEMO_VENV) build dist *.egg-info .nox .mypy_cache .ruff_cache .pytest_cache test-artifacts
