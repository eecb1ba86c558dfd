# The two entry points of the README. Both set up .venv first (scripts/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast main

setup:
	VENV=$(VENV) bash scripts/setup_env.sh

# Test processes side by side (pytest-xdist; one file per process at a time, so that a file's
# cluster daemons and shared fixtures stay together), one CPU thread each: the small models
# of the tests gain little from a second thread. TEST_JOBS=1 runs them one after the other.
TEST_JOBS ?= 2
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest tests -n $(TEST_JOBS) --dist loadfile

# All CPU tests, the slow end-to-end ones included (GPU tests skip themselves without CUDA).
test: setup
	$(PYTEST) --durations=20

# Everything but the tests marked slow.
test-fast: setup
	$(PYTEST) -m "not slow"

# The main job: Post-LN vs Pre-LN vs Admin vs DeepNet vs profiled Admin, 12L-12L, on the
# Bible (en-fr, Mark held out), on this machine's CPU. Options: make main ARGS="--quick".
main: setup
	$(PY) -m admin_fairseq.main_job $(ARGS)
