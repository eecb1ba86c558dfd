# Imported by Python at start-up when this folder is on PYTHONPATH (tests/gpu_on_cpu.ENV):
# the test suite's shim for fairseq's GPU code paths on a CPU. See gpu_on_cpu.py.
import gpu_on_cpu

gpu_on_cpu.install_on_import()
