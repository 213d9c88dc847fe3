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
	$(PY) manage.py seed_demo --port $(PORT)
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) config.asgi:application

# Production topology on this machine (README "Production topology"), production settings (DEBUG off:
# SECRET_KEY, FIELD_ENCRYPTION_KEYS and ALLOWED_HOSTS must be set; PostgreSQL and Redis required).
# supervisord (config/supervisord.conf) runs WEB_CONCURRENCY web processes (config/serve.py), one Celery
# worker and Celery beat, and restarts whichever dies. Ctrl-C / SIGTERM stops all gracefully.
prod: export DEBUG ?= 0
prod: export HOST ?= 127.0.0.1
prod: export PORT ?= 8000
prod: export WEB_CONCURRENCY ?= $(shell nproc)
prod: export GRACEFUL_TIMEOUT ?= 30
prod: export CELERY_CONCURRENCY ?= 2
prod: export PROD_RUN_DIR ?= $(CURDIR)/run
prod: export USER ?= $(shell id -un)
prod: install
	@test -n "$$DATABASE_URL" && test -n "$$REDIS_URL" || \
		{ echo "make prod needs DATABASE_URL (PostgreSQL) and REDIS_URL (Redis)" >&2; exit 2; }
	mkdir -p "$$PROD_RUN_DIR"
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0
	WEB_STOP_SECONDS=$$(( GRACEFUL_TIMEOUT + 15 )) exec $(VENV)/bin/supervisord -c config/supervisord.conf

# One line per process of a running `make prod`: supervisord's state, then each process's own health check.
prod-status: export PROD_RUN_DIR ?= $(CURDIR)/run
prod-status:
	$(VENV)/bin/supervisorctl -c config/supervisord.conf status
	$(PY) -m config.health --port $(PORT)

# The whole suite (CI runs it) in JOBS pytest-xdist workers (default 2; JOBS=0 runs it in one process). Each
# worker has its own test database (pytest-django: test_<name>_gw0, _gw1, ...) and, with REDIS_URL, its own
# Redis database (gwN uses REDIS_URL's db + N: config/env.py). --dist load hands each test to whichever worker
# is free, in collection order (browser tests last); not loadgroup/loadscope/loadfile, which run only one of the
# tests that share a node id (the API fuzzer's, one per operation) and drop the rest without a word.
test: install-dev
	$(PY) -m pytest -n $(or $(JOBS),2) --dist load $(PYTEST_ARGS)

# The edit loop: no browser tests, SQLite and in-memory layers (whatever DATABASE_URL/REDIS_URL say),
# two processes. The PostgreSQL-only race tests skip here; `make test` (and CI) runs everything.
test-fast: export DATABASE_URL =
test-fast: export REDIS_URL =
test-fast: install-dev
	$(PY) -m pytest -q -m "not browser" -n $(or $(JOBS),2) $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install-dev
	$(PY) bench/loader.py
	$(PY) bench/chatkit_server.py --recreate-database --rounds 3
	$(PY) bench/relay.py

clean:
	rm -rf $(VENV) staticfiles artifacts db.sqlite3
