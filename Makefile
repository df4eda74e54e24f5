# Airlock: `make run` tries it out on this machine, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)

# Front-end packages (package.json, package-lock.json) are installed with npm and their
# prebuilt bundles copied into static/vendor/ (gitignored), once per lockfile.
VENDOR := static/vendor
VENDOR_STAMP := $(VENDOR)/.installed-$(shell cat package-lock.json | sha1sum | cut -c1-12)

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/airlock
TEST_REDIS_URL ?= redis://127.0.0.1:6379/14
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) AIRLOCK_DATA_DIR=$(CURDIR)/var/test AIRLOCK_NATIVE=require

# The gateway's hot loops compiled with mypyc (scripts/build_native.py, gateway/native.py),
# once per version of their sources. Without a C compiler the build fails with a message
# and the gateway runs them interpreted; `make test` requires the compiled build.
NATIVE_SOURCES := gateway/postgres/datarows.py gateway/postgres/wirerows.py gateway/postgres/_wirerows.c masking/triggerscan.py masking/_triggerscan.c gateway/postgres/relay.py masking/placeholders.py masking/scanner.py masking/policy.py policies/textscan.py policies/_textscan.c recordings/jsonscan.py recordings/_jsonscan.c recordings/chainrows.py recordings/_chainrows.c gateway/native.py scripts/build_native.py
NATIVE_STAMP := $(VENV)/.native-$(shell cat $(NATIVE_SOURCES) requirements-dev.txt | sha1sum | cut -c1-12)

.PHONY: run test lint typecheck migrations-check unit browser bench venv vendor native system clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

$(VENDOR_STAMP): package.json package-lock.json
	@command -v npm >/dev/null || scripts/ensure-system.sh
	@command -v npm >/dev/null || { echo "npm is needed to install the console's front-end packages (apt-get install npm)"; exit 1; }
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/asciinema-player
	cp node_modules/asciinema-player/dist/bundle/asciinema-player.min.js \
	   node_modules/asciinema-player/dist/bundle/asciinema-player.css $(VENDOR)/asciinema-player/
	cp node_modules/asciinema-player/LICENSE $(VENDOR)/asciinema-player/ 2>/dev/null || true
	@touch $@

vendor: $(VENDOR_STAMP)

$(NATIVE_STAMP): $(STAMP) $(NATIVE_SOURCES)
	@rm -f $(VENV)/.native-*
	@command -v cc >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && echo "installing system packages: gcc" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc >/dev/null; } || true
	@$(PY) -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "$$($(PY) -c 'import sys; print(sys.base_prefix)')" = /usr ] \
	  && echo "installing system packages: python3-dev" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-dev >/dev/null; } || true
	@test -e /usr/include/openssl/evp.h || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && echo "installing system packages: libssl-dev" && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libssl-dev >/dev/null; } || true
	@$(PY) scripts/build_native.py && touch $@ || echo "(the gateway will run its hot loops interpreted)"

native: $(NATIVE_STAMP)

venv: $(STAMP) $(VENDOR_STAMP) $(NATIVE_STAMP)

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

unit: venv system native
	$(TEST_ENV) $(VENV)/bin/pytest -m "not browser" -q

browser: venv system native
	$(TEST_ENV) $(VENV)/bin/pytest -m browser -q -p no:randomly

test: lint typecheck migrations-check unit browser

bench: venv system native
	$(TEST_ENV) $(PY) -m bench

clean:
	rm -rf $(VENV) var node_modules $(VENDOR)
