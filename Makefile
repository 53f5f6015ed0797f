# Two commands on a fresh machine: `make run` starts the service, `make test` runs the suite.
# Each creates the virtual environment it needs in .venv on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Where this machine keeps the CPU build of torch, if it has one (our dev and CI machines do).
WHEELS := $(wildcard /opt/wheels)
INSTALL := $(BIN)/pip install --quiet $(if $(WHEELS),--find-links $(WHEELS))

.PHONY: run test venv browser lint bench clean

venv: $(STAMP)

# face_recognition's metadata asks for `dlib` (a 12-minute compile); dlib-bin, pulled in by
# the worker extra, provides the same module prebuilt, so face_recognition goes in with --no-deps.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "setuptools>=69,<81" wheel
	$(INSTALL) -e ".[api,worker,dev]"
	$(INSTALL) --no-deps "face_recognition==1.3.0"
	touch $@

run: $(STAMP)
	$(BIN)/lookalike migrate
	$(BIN)/lookalike serve

# tests/web drive Debian's Chromium through Playwright (never a downloaded browser). Installed here
# when missing, where this user may run apt-get (CI and our dev machines run as root); elsewhere
# those tests are skipped with the command to run, except under LOOKALIKE_REQUIRE_BROWSER (CI).
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "tests/web need Chromium: sudo apt-get install chromium"; fi; }

test: $(STAMP) browser
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check app worker tests bench migrations

bench: $(STAMP)
	$(BIN)/python bench/upload.py

clean:
	rm -rf $(VENV) data .pytest_cache
