"""The output-change analysis runs and shows the growth orders the Admin paper reports."""

import csv
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.slow  # a script run of half a minute: make test, not the quick loop
def test_output_change_growth_orders(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "output_change.py"), "--depths", "1", "2", "4",
         "8", "16", "--seeds", "1", "--variants", "Post-LN", "Admin O(logn)", "Admin O(1)",
         "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "output_change.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 5
    assert (tmp_path / "output_change.png").stat().st_size > 10_000
    slope = {}
    for line in (tmp_path / "summary.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in ("Post-LN", "Admin O(logn)", "Admin O(1)"):
            slope[cells[0]] = float(cells[3])
    # Post-LN grows about linearly (or faster) in depth; Admin much more slowly
    assert slope["Post-LN"] > 0.9
    assert slope["Post-LN"] > slope["Admin O(logn)"] + 0.4
    assert slope["Admin O(logn)"] > slope["Admin O(1)"]
    change = {(r["variant"], int(r["layers"])): float(r["output_change"]) for r in rows}
    assert change["Post-LN", 16] > 3 * change["Admin O(logn)", 16]
