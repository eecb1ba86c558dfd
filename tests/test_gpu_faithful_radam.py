"""Transformer-Clinic's recipes (RAdam, plain --fp16: fairseq's flat fp32 master weights) as a
GPU gets them, trained on the CPU through the suite's shim (see tests/test_gpu_faithful.py),
one run per method family, each evaluated and converted."""

import json
import re

import pytest
import torch

from admin_fairseq.models import options

from recipe_runs import evaluate_and_convert, train_gpu_command
from recipe_runs import state as saved_state


@pytest.mark.slow
def test_radam_fp16_two_step_profiled_admin_trains_evaluates_and_converts(bible_recipe_data, tmp_path):
    """Transformer-Clinic's recipe as a GPU gets it: RAdam over fairseq's flat fp32 master
    weights (plain --fp16), profiled Admin in two steps (a profiling run, then training with
    the profile). Before the fixes the training run stopped at its optimizer ("does not
    support flat params") and its checkpoints could not be loaded again."""
    run = tmp_path / "run"
    commands, info, log = train_gpu_command(bible_recipe_data, run, "admin-profiled", "80x8000")
    assert len(commands) == 2 and "--admin-profile-to" in commands[0]
    assert "--fp16" in commands[1] and "--fp16-no-flatten-grads" not in commands[1]
    profile = json.loads((run / "admin_profile.json").read_text())
    assert len(profile["encoder"]) == 4 and len(profile["decoder"]) == 6
    assert profile["encoder"][0] == 1.0 and profile["encoder"][-1] > 1.0
    state = saved_state(run)
    model_cfg = state["cfg"]["model"]
    assert state["cfg"]["optimizer"]["_name"] == "radam" and state["cfg"]["common"]["fp16"]
    assert options.profiled(model_cfg) and model_cfg.admin_profile_source == str(run / "admin_profile.json")
    first = state["model"]["encoder.layers.0.self_attn_residual.omega"]
    assert first.shape == (16,) and first.dtype == torch.float32  # fp32 master weights saved
    assert state["optimizer_history"][-1]["num_updates"] >= 2
    evaluate_and_convert(bible_recipe_data, run, tmp_path)


@pytest.mark.slow
def test_iwslt_recipe_radam_fp16_vector_admin_trains_evaluates_and_converts(bible_recipe_data, tmp_path):
    """Plain --fp16 with RAdam on the IWSLT'14 model, the loss scaler starting at 2**20: it
    overflows and halves (fairseq's overflow path, which makes a CUDA tensor) until the
    gradients fit, then updates."""
    run = tmp_path / "run"
    commands, info, log = train_gpu_command(bible_recipe_data, run, "admin", "1x4096",
                                            extra=["--fp16-init-scale", str(2**20)])  # fmt: skip
    assert info.arch == "transformer_admin_iwslt_de_en" and "--fp16" in commands[-1]
    assert re.search(r"gradient overflow detected.*loss scale to: 524288", log), log[-3000:]
    assert saved_state(run)["optimizer_history"][-1]["num_updates"] >= 5
    omega = saved_state(run)["model"]["encoder.layers.0.self_attn_residual.omega"]
    # fp32 master weights: RAdam's steps move each entry of the vector omegas its own way
    assert omega.dtype == torch.float32 and not torch.all(omega == omega[0])
    evaluate_and_convert(bible_recipe_data, run, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["admin-scalar", "deepnet", "post-ln"])
def test_radam_fp16_recipe_trains_evaluates_and_converts_every_method_family(bible_recipe_data, tmp_path, method):
    run = tmp_path / "run"
    commands, info, _ = train_gpu_command(bible_recipe_data, run, method, "80x8000")
    assert len(commands) == 1 and "--fp16" in commands[0]
    saved = saved_state(run)
    assert saved["cfg"]["optimizer"]["_name"] == "radam" and saved["cfg"]["common"]["fp16"]
    assert saved["optimizer_history"][-1]["num_updates"] >= 2
    evaluate_and_convert(bible_recipe_data, run, tmp_path)
