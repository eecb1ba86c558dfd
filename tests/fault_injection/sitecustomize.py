# Imported by Python at start-up when this folder is on PYTHONPATH (tests/fault_injection.ENV):
# the test suite's way to kill a training process in the middle of writing a checkpoint.
# See fault_injection.py.
import fault_injection

fault_injection.install()
