"""The main job end to end, in a smaller setting of its quick mode: real Bible data in, a
BLEU table, a CSV and a loss plot out, with every BLEU recomputed from the translations."""

import csv
import json
import math
import subprocess
import sys

import pytest

from admin_fairseq.evaluation import score


@pytest.mark.slow
def test_main_job_small_setting_end_to_end(tmp_path):
    out = tmp_path / "main"
    cmd = [sys.executable, "-m", "admin_fairseq.main_job", "--quick", "--out", str(out),
           "--methods", "post-ln,admin", "--depth", "2-2", "--updates", "30", "--warmup", "10",
           "--valid-every", "15", "--train-size", "2000", "--valid-size", "100",
           "--test-size", "30", "--vocab-size", "1000"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    log = result.stdout
    assert "[run 2 of 2: admin 2-2] update 30/30: train loss" in log
    assert "[run 1 of 2: post-ln 2-2] update 15: valid loss" in log
    assert "| post-ln | 2-2 | 1x2048 | 30 |" in log  # the table is printed ...
    assert (out / "comparison.md").read_text() in log  # ... and written
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["method"] for r in rows] == ["post-ln", "admin"]
    references = (out / "data" / "test.fr").read_text().splitlines()
    assert len(references) == 30
    for row in rows:
        hyps = (out / "runs" / row["method"] / "eval" / "hypotheses-test.fr").read_text().splitlines()
        assert len(hyps) == 30
        assert math.isfinite(float(row["bleu"]))
        assert float(row["bleu"]) == pytest.approx(score(hyps, references)["bleu"])
        assert float(row["chrf"]) == pytest.approx(score(hyps, references)["chrf"])
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((out / "main_job.json").read_text())
    assert record["settings"]["updates"] == 30 and record["seconds"]["total"] > 0

    # the same command again keeps the finished runs and reproduces the table
    table = (out / "comparison.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[main] [run 2 of 2: admin 2-2] already trained with these settings; kept" in again.stdout
    assert "already evaluated; kept" in again.stdout
    assert (out / "comparison.md").read_text() == table


def test_main_job_refuses_bad_options(tmp_path):
    for args, message in ((["--methods", "admin,postln"], "unknown method(s) ['postln']"),
                          (["--pair", "en-es"], "--pair must be en-fr or en-de"),
                          (["--width", "100"], "--width must be a multiple of 32")):  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "admin_fairseq.main_job", "--out",
                                 str(tmp_path / "x"), *args], capture_output=True, text=True)  # fmt: skip
        assert result.returncode == 2 and message in result.stderr, result.stderr
