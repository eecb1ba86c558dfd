"""The precisions a --cpu run of the train step takes without any patch: fp32 (the default
with --cpu), --precision amp (fairseq's AMP optimizer, which on a CPU is fp32 with its scaler
off), --precision bf16 (the plugin's autocast, which the CPU has), and the refusals
(fairseq's TPU --bf16; the recipe's fp16 flags, refused in tests/test_gpu_faithful.py).
The recipes' fp16 flags themselves are trained as a GPU gets them in tests/test_gpu_faithful.py.
"""

import math
import os
import subprocess
import sys

import pytest
import torch

from admin_fairseq import fairseq_log
from admin_fairseq.checkpoints import read as read_checkpoint


LAYERS = {"admin-scalar": 3}
ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


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


def _omegas(model_state):
    return {k: v for k, v in model_state.items() if k.endswith("_residual.omega")}


@pytest.mark.slow
def test_bf16_trains_as_fp32_does_with_fp32_weights_and_every_later_step_works(bible_recipe_data, tmp_path):
    """--precision bf16 on the CPU (torch's CPU autocast has bf16): the first updates' losses
    agree with fp32's within 1%, the validation loss after 40 updates within 2%; weights,
    omegas and checkpoints are fp32 and the vector omegas train; the run resumes, and the
    evaluate step, the export and the CTranslate2 conversion take its checkpoint."""
    LAYERS["admin"] = 2
    runs = {p: tmp_path / p for p in ("fp32", "bf16")}
    for precision, run in runs.items():
        _train(bible_recipe_data, run, "admin", precision=precision, max_update=40)
    inner = {p: _inner_logs(run)[0] for p, run in runs.items()}
    first = [(float(a["loss"]), float(b["loss"])) for a, b in zip(inner["fp32"][:3], inner["bf16"][:3])]
    print("first logged losses (fp32, bf16):", first)
    assert all(abs(a - b) <= 0.01 * a for a, b in first), first
    valid = {}
    for precision, run in runs.items():
        log = (run / "train.log").read_text().splitlines()
        valid[precision] = float([s for _, s in fairseq_log.records(log, "valid")][-1]["valid_loss"])
    print("validation loss after 40 updates (fp32, bf16):", valid)
    assert abs(valid["bf16"] - valid["fp32"]) <= 0.02 * valid["fp32"], valid

    state = read_checkpoint(runs["bf16"] / "checkpoint_last.pt")
    assert getattr(state["cfg"]["model"], "bf16_autocast", None) is True  # the model's own setting
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float32}
    omegas = _omegas(state["model"])
    assert omegas and all(not torch.all(v == v.reshape(-1)[0]) for v in omegas.values())  # trained, per dimension

    # resume: the same command with a later end goes on from update 40
    result = _train(bible_recipe_data, runs["bf16"], "admin", precision="bf16", max_update=50)
    assert "(epoch 1 @ 40 updates)" in result.stdout
    assert read_checkpoint(runs["bf16"] / "checkpoint_last.pt")["optimizer_history"][-1]["num_updates"] == 50

    from admin_fairseq import ct2
    from admin_fairseq.export import export_checkpoint
    from admin_fairseq.recipes import evaluate

    record = evaluate.evaluate(runs["bf16"], cpu=True, avg_last=1, generate_args=["--max-len-a", "0", "--max-len-b", "12"],
                               log=lambda *_: None)  # fmt: skip
    assert record["bleu"] >= 0 and record["chrf"] >= 0
    plain = tmp_path / "plain.pt"
    export_checkpoint(runs["bf16"] / "checkpoint_last.pt", plain)
    assert torch.load(plain, map_location="cpu", weights_only=True)["cfg"]["model"]["arch"] == "transformer"
    ct2.convert(runs["bf16"] / "checkpoint_last.pt", tmp_path / "ct2", data=bible_recipe_data / "bin", log=lambda *_: None)
    assert (tmp_path / "ct2" / "model.bin").stat().st_size > 0


def test_fairseqs_own_bf16_is_refused_with_the_reason(bible_recipe_data, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(bible_recipe_data),
         "--method", "admin", "--depth", "2-2", "--batch", "1x1024", "--recipe", "regular", "--cpu",
         "--save-dir", str(tmp_path / "run"), "--dry-run", "--", "--bf16"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--bf16 is fairseq 0.12's TPU precision (it implies --tpu" in result.stderr
    assert "use --precision bf16" in result.stderr


def test_bf16_on_a_gpu_without_it_names_the_gpu(monkeypatch):
    """A V100 (compute capability 7.0) has no bf16: the model refuses to train, naming it."""
    from types import SimpleNamespace

    from admin_fairseq.models import transformer_admin

    monkeypatch.setitem(sys.modules, "fairseq_cli.train", sys.modules.get("fairseq_cli.train", object()))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100-SXM2-32GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))
    args = SimpleNamespace(bf16_autocast=True, cpu=False, device_id=0)
    with pytest.raises(ValueError, match=r"the GPU Tesla V100-SXM2-32GB \(compute capability 7.0\) does not support bfloat16"):
        transformer_admin.check_bf16(args)
    with pytest.raises(ValueError, match=r"--bf16-autocast and --memory-efficient-fp16 are two precisions"):
        transformer_admin.check_bf16(SimpleNamespace(bf16_autocast=True, memory_efficient_fp16=True, cpu=True))
    transformer_admin.check_bf16(SimpleNamespace(bf16_autocast=True, cpu=True))  # the CPU has it


def _deep_fp16_run(data, run, omega_fp32, monitor=False):
    """100L-100L (omegas of 6.07 and 7.19 at init), width 16, under the published
    --memory-efficient-fp16 at the regular batch's peak learning rate (1e-3), 6 updates,
    through the suite's shim for fairseq's GPU code on a CPU; with ``monitor``, the stability
    monitor every 2 updates."""
    from pathlib import Path

    from conftest import USER_DIR, cli_path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_on_cpu"))
    import gpu_on_cpu

    cmd = [cli_path("fairseq-train"), str(data / "bin"), "--user-dir", str(USER_DIR),
           "--arch", "transformer_admin_tiny", "--encoder-layers", "100", "--decoder-layers", "100",
           "--encoder-embed-dim", "16", "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
           "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
           "--share-all-embeddings", "--admin-init", "--admin-as-parameter", *(["--admin-omega-fp32"] if omega_fp32 else []),
           "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3", "--lr-scheduler", "fixed",
           "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--dropout", "0",
           "--memory-efficient-fp16", "--fp16-init-scale", "4", "--max-tokens", "256", "--max-update", "6",
           "--no-epoch-checkpoints", "--disable-validation", "--log-format", "json", "--log-interval", "1",
           "--num-workers", "0", "--seed", "1", "--save-dir", str(run), "--cpu",
           *(["--admin-monitor-interval", "2"] if monitor else [])]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(gpu_on_cpu.ENV, OMP_NUM_THREADS="1"), timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    inner = [s for _, s in fairseq_log.records(result.stdout.splitlines() + result.stderr.splitlines(), "train_inner")]
    if monitor:
        return read_checkpoint(run / "checkpoint_last.pt")["model"], [float(s["loss"]) for s in inner], inner
    return read_checkpoint(run / "checkpoint_last.pt")["model"], [float(s["loss"]) for s in inner]


@pytest.mark.slow
def test_admin_omega_fp32_lets_a_deep_models_omegas_train_under_memory_efficient_fp16(bible_recipe_data, tmp_path):
    """fp16's spacing at omega 6.07 is 2**-8 = 0.0039: Adam's step of about the learning rate
    (1e-3) is below half of it and is lost, so no omega moves. --admin-omega-fp32 keeps the
    omegas in fp32 (the forward still uses them rounded to fp16): they move; the first
    updates' losses are the same."""
    from admin_fairseq.core.omega import calculate_init

    held, held_losses = _deep_fp16_run(bible_recipe_data, tmp_path / "fp16", omega_fp32=False)
    # the same command with the stability monitor (which changes no loss), read the fp16 way
    kept, kept_losses, kept_log = _deep_fp16_run(bible_recipe_data, tmp_path / "fp32-omega", omega_fp32=True,
                                                 monitor=True)  # fmt: skip
    init = (calculate_init(2 * 100), calculate_init(3 * 100))  # sub-layers per stack
    print(f"omega at init: encoder {init[0]:.2f}, decoder {init[1]:.2f}; first losses", held_losses[:3], kept_losses[:3])
    for name, omega in _omegas(held).items():
        assert torch.all(omega == omega.reshape(-1)[0]), name  # not one dimension moved
    moved = [name for name, omega in _omegas(kept).items() if not torch.all(omega == omega.reshape(-1)[0])]
    assert len(moved) == len(_omegas(kept)), f"{len(moved)} of {len(_omegas(kept))} omegas moved"
    assert {omega.dtype for omega in _omegas(kept).values()} == {torch.float32}
    assert len(held_losses) == len(kept_losses) == 6
    assert all(abs(a - b) < 1e-3 for a, b in zip(held_losses[:2], kept_losses[:2])), (held_losses, kept_losses)
    measured = [s for s in kept_log if "share/decoder.99.ffn" in s]
    assert [int(s["num_updates"]) for s in measured] == [2, 4, 6]
    for stats in measured:
        shares = [float(v) for k, v in stats.items() if k.startswith("share/")]
        assert len(shares) == 2 * 100 + 3 * 100 and all(0 < v < 1 for v in shares)
        assert math.isfinite(float(stats["output_change/decoder"])) and float(stats["gnorm/encoder.00"]) > 0
        assert float(stats["omega_min/decoder.99.ffn"]) <= float(stats["omega/decoder.99.ffn"])
