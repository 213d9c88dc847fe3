# Switchboard: `make run` serves the product, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: run test test-fast lint install install-dev bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Local development server: DEBUG on unless you say otherwise, SQLite unless DATABASE_URL is set.
run: export DEBUG ?= 1
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) config.asgi:application

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

# The edit loop: no browser tests, SQLite and in-memory layers (whatever DATABASE_URL/REDIS_URL say),
# two processes. The PostgreSQL-only race tests skip here; `make test` (and CI) runs everything.
test-fast: export DATABASE_URL =
test-fast: export REDIS_URL =
test-fast: install-dev
	$(PY) -m pytest -q -m "not browser" -n $(or $(JOBS),2) $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

bench: install-dev
	$(PY) bench/loader.py
	$(PY) bench/chatkit_sessions.py
	$(PY) bench/relay.py

clean:
	rm -rf $(VENV) staticfiles artifacts db.sqlite3
