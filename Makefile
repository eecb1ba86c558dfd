# The two entry points of the README. Both set up .venv first (scripts/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast

setup:
	VENV=$(VENV) bash scripts/setup_env.sh

# All CPU tests, the slow end-to-end ones included (GPU tests skip themselves without CUDA).
test: setup
	$(PY) -m pytest tests

# Everything but the tests marked slow.
test-fast: setup
	$(PY) -m pytest tests -m "not slow"
