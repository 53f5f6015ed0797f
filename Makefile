# Two commands on a fresh machine: `make run` starts the service, `make test` runs the suite.
# Each creates the virtual environment it needs in .venv on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Where this machine keeps the CPU build of torch, if it has one (our dev and CI machines do).
WHEELS := $(wildcard /opt/wheels)
INSTALL := $(BIN)/pip install --quiet $(if $(WHEELS),--find-links $(WHEELS))

.PHONY: run test venv lint bench clean

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

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check app worker tests bench migrations

bench: $(STAMP)
	$(BIN)/python bench/upload.py

clean:
	rm -rf $(VENV) data .pytest_cache
