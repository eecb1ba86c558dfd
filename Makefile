# The two entry points of the README. Both set up .venv first (scripts/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast main

setup:
	VENV=$(VENV) bash scripts/setup_env.sh

# All CPU tests, the slow end-to-end ones included (GPU tests skip themselves without CUDA).
test: setup
	$(PY) -m pytest tests --durations=20

# Everything but the tests marked slow.
test-fast: setup
	$(PY) -m pytest tests -m "not slow"

# The main job: Post-LN vs Pre-LN vs Admin vs DeepNet vs profiled Admin, 12L-12L, on the
# Bible (en-fr, Mark held out), on this machine's CPU. Options: make main ARGS="--quick".
main: setup
	$(PY) -m admin_fairseq.main_job $(ARGS)
