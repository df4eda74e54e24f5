# Airlock: `make run` tries it out on this machine, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/airlock
TEST_REDIS_URL ?= redis://127.0.0.1:6379/14
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) AIRLOCK_DATA_DIR=$(CURDIR)/var/test

.PHONY: run test lint typecheck migrations-check unit browser bench venv system clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run: venv
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py demo
	$(PY) manage.py airlock

system:
	@scripts/ensure-system.sh

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy --config-file pyproject.toml $(shell cat mypy-core.txt)

migrations-check: venv
	AIRLOCK_DATA_DIR=$(CURDIR)/var/migrations-check $(PY) manage.py makemigrations --check --dry-run

unit: venv system
	$(TEST_ENV) $(VENV)/bin/pytest -m "not browser" -q

browser: venv system
	$(TEST_ENV) $(VENV)/bin/pytest -m browser -q -p no:randomly

test: lint typecheck migrations-check unit browser

bench: venv system
	$(TEST_ENV) $(PY) -m bench

clean:
	rm -rf $(VENV) var
