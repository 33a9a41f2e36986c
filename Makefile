# facegate: `make demo` runs the main job, `make test` runs the tests. Both create .venv first.
SHELL := /bin/bash
VENV ?= .venv
FACES ?=
OUT ?= out/demo
DEMO_ARGS ?=

# The TFX 1.16 stack has wheels for CPython 3.11 only: find one, or say plainly there is none.
PY311 := $(shell for p in python3.11 python3 python; do \
	  c=$$(command -v $$p 2>/dev/null) || continue; \
	  $$c -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && { echo $$c; break; }; \
	done)

PY := $(VENV)/bin/python

.PHONY: venv demo test lint format clean

$(VENV)/.installed: pyproject.toml constraints.txt
	@if [ -z "$(PY311)" ]; then \
	  echo "facegate needs Python 3.11 (TFX 1.16 has no wheels for 3.12+); none found on PATH." >&2; \
	  echo "Install python3.11 (e.g. 'pyenv install 3.11' or 'apt-get install python3.11') and re-run." >&2; \
	  exit 1; fi
	@echo ">> creating $(VENV) with $(PY311)"
	$(PY311) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip<25" setuptools wheel
	@echo ">> installing the pinned stack (about 2-5 minutes, ~2.4 GB)"
	$(PY) -m pip install --quiet --ignore-requires-python -c constraints.txt -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/facegate demo --faces "$(FACES)" --out "$(OUT)" $(DEMO_ARGS)

test: venv
	$(PY) -m pytest -q tests

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf out build *.egg-info
