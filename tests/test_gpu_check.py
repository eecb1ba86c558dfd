"""python -m admin_fairseq.gpu_check: its tiny CPU mode runs every step for real (fairseq's GPU
code on CPU tensors, through the suite's shim in tests/gpu_on_cpu), so that the command a
user runs first on a GPU machine cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_on_cpu"))
import gpu_on_cpu  # noqa: E402

ENV = dict(os.environ, OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")


@pytest.mark.slow
def test_tiny_cpu_check_runs_every_step(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run([sys.executable, "-m", "admin_fairseq.gpu_check", "--cpu", "--tiny",
                             "--out", str(out)], capture_output=True, text=True,
                            env=dict(gpu_on_cpu.ENV, OMP_NUM_THREADS="1"), timeout=900)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    for step in ("1/5 environment", "2/5 fp16 forward and backward", "3/5 memory-efficient-fp16",
                 "4/5 RAdam, plain --fp16: profiling run", "4/5 RAdam, plain --fp16: the same command",
                 "4/5 Adam, --memory-efficient-fp16, profiled inside the run: 2 worker(s), gloo",
                 "5/5 the test suite's gpu tests"):  # fmt: skip
        assert f"[gpu_check] {step}" in result.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["environment"]["torch"] == torch.__version__ and report["environment"]["gpus"] == []
    deep = report["deepest_preset"]
    assert deep["finite"] and deep["dtype"] == "torch.float16"
    assert deep["omega_max"] > 10  # O(1) omegas of 100 layers: about 14 and 17
    for method in ("Admin", "Post-LN"):
        row = report["training"][method]
        assert row["words_per_second"] > 0 and row["intervals"] >= 2 and row["peak_memory_gb"] > 0
    assert report["admin_speed_ratio"] == pytest.approx(
        report["training"]["Admin"]["words_per_second"] / report["training"]["Post-LN"]["words_per_second"])
    paths = report["recipe_paths"]
    clinic, admin_torch = paths["radam-fp16-profiled"], paths["adam-memory-efficient-fp16-profiled"]
    assert clinic["ok"] and (clinic["resumed_from"], clinic["resumed_to"]) == (6, 8)
    assert clinic["profile_first_last"][0] == 1.0 and clinic["profile_first_last"][1] > 1.0
    assert admin_torch["ok"] and admin_torch["workers"] == 2 and admin_torch["updates"] == 4
    assert admin_torch["monitored_updates"] == [2, 4]  # the stability monitor, logged by rank 0
    bf16 = paths["adam-bf16-autocast"]  # the CPU has bf16 autocast
    assert bf16["ok"] and bf16["updates"] == 4 and bf16["finite"]
    assert report["gpu_tests"]["ran"] and "skipped" in report["gpu_tests"]["summary"]  # no CUDA here
    markdown = (out / "gpu_check.md").read_text()
    assert "| Admin |" in markdown and "Admin / Post-LN words/s" in markdown
    assert "| radam-fp16-profiled | 6 then resumed to 8 |" in markdown


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cpu_mode_without_the_tests_shim_says_how_to_run_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "admin_fairseq.gpu_check", "--cpu", "--tiny", "--out",
                             str(tmp_path / "c")], capture_output=True, text=True, env=ENV)  # fmt: skip
    assert result.returncode == 2
    assert "without the test suite's shim" in result.stderr and "tests/test_gpu_check.py" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_a_gpu_says_what_to_do(tmp_path):
    result = subprocess.run([sys.executable, "-m", "admin_fairseq.gpu_check", "--out", str(tmp_path / "c")],
                            capture_output=True, text=True, env=ENV)  # fmt: skip
    assert result.returncode == 2
    assert "torch sees no CUDA GPU" in result.stderr and "--cpu --tiny" in result.stderr
    assert not (tmp_path / "c").exists()
