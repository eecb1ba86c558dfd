"""The ReinMax benchmark script runs and its quick results show what it claims."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow  # a script run of half a minute: make test, not the quick loop
def test_quick_benchmark(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_reinmax.py"), "--quick",
         "--samples", "20000", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    bias = {(r["f"], r["estimator"]): r for r in results["bias"]}
    quad_rm, quad_st = bias["quadratic", "ReinMax (tau 1)"], bias["quadratic", "ST"]
    assert quad_rm["bias"] < 3 * quad_rm["noise_floor"]
    assert quad_st["bias"] > 10 * quad_st["noise_floor"]
    assert {r["estimator"] for r in results["polynomial"]} >= {"ST", "ReinMax (tau 1)"}
    assert all(r["ratio"] > 0 for r in results["speed"])
    table = (tmp_path / "results.md").read_text()
    assert "| quadratic | ReinMax (tau 1) |" in table and "ReinMax / ST" in table
