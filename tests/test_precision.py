"""The precisions a --cpu run of the train step takes without any patch: fp32 (the default
with --cpu), --precision amp (fairseq's AMP optimizer, which on a CPU is fp32 with its scaler
off), and the refusals (bf16; the recipe's fp16 flags, refused in tests/test_gpu_faithful.py).
The recipes' fp16 flags themselves are trained as a GPU gets them in tests/test_gpu_faithful.py.
"""

import math
import os
import subprocess
import sys

import pytest

from admin_fairseq import fairseq_log
from admin_fairseq.checkpoints import read as read_checkpoint


LAYERS = {"admin-scalar": 3}
ENV = dict(os.environ, OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")


def _train(data, run, method, precision, max_update=40):
    depth = f"{LAYERS[method]}-{LAYERS[method]}"
    cmd = [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(data),
           "--method", method, "--depth", depth, "--batch", "1x1024", "--recipe", "regular",
           "--cpu", "--precision", precision, "--size", "cpu", "--save-dir", str(run),
           "--log-interval", "5", "--", "--max-update", str(max_update), "--warmup-updates", "20",
           "--save-interval-updates", "20", "--no-epoch-checkpoints"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def _inner_logs(run):
    log = (run / "train.log").read_text()
    return [stats for _, stats in fairseq_log.records(log.splitlines(), "train_inner")], log


@pytest.mark.slow
def test_amp_on_cpu_runs_in_fp32(bible_recipe_data, tmp_path):
    """fairseq's --amp autocasts with torch.cuda.amp, which does nothing on a CPU: the run
    goes through the AMP optimizer with its scaler disabled (loss scale 1) in fp32."""
    run = tmp_path / "run"
    _train(bible_recipe_data, run, "admin-scalar", precision="amp", max_update=20)
    inner, _ = _inner_logs(run)
    assert {float(x["loss_scale"]) for x in inner} == {1.0}
    assert all(math.isfinite(float(x["loss"])) for x in inner)
    state = read_checkpoint(run / "checkpoint_last.pt")
    assert state["cfg"]["common"]["amp"]


def test_bf16_is_refused_with_the_reason(bible_recipe_data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(bible_recipe_data),
         "--method", "admin", "--depth", "2-2", "--batch", "1x1024", "--recipe", "regular", "--cpu",
         "--precision", "bf16", "--save-dir", str(tmp_path / "run"), "--dry-run"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert result.returncode == 2
    assert "fairseq 0.12's --bf16 implies --tpu" in result.stderr
    assert "recipe, fp32, amp" in result.stderr
    assert not (tmp_path / "run").exists()
