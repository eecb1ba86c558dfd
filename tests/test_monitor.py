"""The per-layer stability monitor (``--admin-monitor-interval``, admin_fairseq/monitor.py):
what it measures, in-process on models built as fairseq-train builds them; its warnings;
and a fairseq-train run with it (JSON log, TensorBoard, checkpoint, unchanged training), and
a two-worker train-step run that it stops."""

import json
import logging
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from fairseq_helpers import SMALL, build, sample_batch  # noqa: E402  (loads the plugin)

from admin_fairseq import fairseq_log, monitor
from admin_fairseq.checkpoints import read as read_checkpoint
from admin_fairseq.recipes import compare
from conftest import USER_DIR, run_cli

ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")


def _monitor(model, task, **kwargs):
    watcher = monitor.StabilityMonitor(model, interval=1, **kwargs)
    src, lengths, prev = sample_batch(task, batch=4, src_len=9, tgt_len=7)
    watcher.fixed = {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev}
    return watcher


def test_branch_share_is_var_f_over_var_sum_per_named_sublayer_and_leaves_the_model_as_it_was(dict_dir):
    model, task = build(dict_dir, "--arch", "transformer_admin", *SMALL, "--encoder-layers", "2",
                        "--decoder-layers", "2", "--admin-init")  # fmt: skip
    watcher = _monitor(model, task)
    # an independent record of the same quantity: the Admin residual modules' own inputs
    seen = {}

    def hook(name):
        def record(module, args, output):
            x, f_x = args
            seen[name] = (f_x.float().var() / output.float().var()).item()
        return record

    handles = [module.register_forward_hook(hook(key)) for key, module in
               [(k.replace(".layers.", ".").replace("_residual", "").replace("encoder_attn", "cross_attn"), m)
                for k, m in model.named_modules() if k.endswith("_residual")]]  # fmt: skip
    model.train()
    _, before, shares = watcher.forward_fixed(record_shares=True)
    for handle in handles:
        handle.remove()
    assert model.training  # put back in training mode
    assert list(shares) == ["encoder.0.self_attn", "encoder.0.ffn", "encoder.1.self_attn", "encoder.1.ffn",
                            "decoder.0.self_attn", "decoder.0.cross_attn", "decoder.0.ffn",
                            "decoder.1.self_attn", "decoder.1.cross_attn", "decoder.1.ffn"]  # fmt: skip
    for name, (branch, out) in shares.items():
        assert (branch / out).item() == pytest.approx(seen[name], rel=1e-5), name
    assert all("residual_connection" not in layer.__dict__ for _, _, layer in watcher.layers())
    _, again, _ = watcher.forward_fixed()
    assert torch.equal(before, again)  # evaluation mode: measuring twice gives the same output

    # omega scales the skip branch: a large omega leaves the branch no share, a small one all
    residual = model.encoder.layers[0].self_attn_residual
    for omega, check in ((1e3, lambda s: s < 1e-4), (1e-3, lambda s: s > 0.99)):
        residual.omega.fill_(omega)
        branch, out = watcher.forward_fixed(record_shares=True)[2]["encoder.0.self_attn"]
        assert check((branch / out).item()), omega


def test_post_ln_layers_lean_on_their_branch_more_than_admin_layers_and_every_method_is_measured(dict_dir):
    """The Admin paper's picture at initialisation, 12L-12L: Post-LN's sub-layers take a larger
    share of their output from the branch than Admin's (omega > 1 weights the skip branch).
    Post-LN and Pre-LN run fairseq's own layers; the monitor measures them alike."""
    means = {}
    for method, flags in (("post-ln", []), ("admin", ["--admin-init"]), ("deepnet", ["--deepnet"]),
                          ("pre-ln", ["--encoder-normalize-before", "--decoder-normalize-before"])):  # fmt: skip
        model, task = build(dict_dir, "--arch", "transformer_admin", *SMALL, "--encoder-layers", "12",
                            "--decoder-layers", "12", "--dropout", "0", *flags)  # fmt: skip
        shares = _monitor(model, task).forward_fixed(record_shares=True)[2]
        assert len(shares) == 12 * 2 + 12 * 3, method
        means[method] = sum((b / o).item() for b, o in shares.values()) / len(shares)
        omegas = _monitor(model, task).omegas()
        assert len(omegas) == (60 if method in ("admin", "deepnet") else 0), method
    assert means["admin"] < 0.5 * means["post-ln"], means


def test_a_bf16_autocast_model_is_measured_in_its_own_precision(dict_dir):
    model, task = build(dict_dir, "--arch", "transformer_admin", *SMALL, "--encoder-layers", "2",
                        "--decoder-layers", "2", "--admin-init", "--bf16-autocast")  # fmt: skip
    watcher = _monitor(model, task)
    seen = []
    model.encoder.layers[0].fc1.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    encoder_out, features, shares = watcher.forward_fixed(record_shares=True)
    assert seen == [torch.bfloat16]  # the model's forward, autocast included, is what is measured
    assert features.dtype == torch.float32 and len(shares) == 10
    assert all(0 < (b / o).item() < 1 for b, o in shares.values())


def test_the_early_range_grows_over_the_warm_up_and_warns_once_on_leaving_it():
    ref = monitor.Reference(factor=10)
    # the warm-up: a healthy drift widens the range; a jump beyond 10x of it is a departure
    for update, value in enumerate([1.0, 2.0, 4.0, 8.0, 3.0], start=1):
        assert ref.add(update, value, gathering=True) is None
    assert ref.add(6, 200.0, gathering=True) == (1.0, 8.0)  # a blow-up during the warm-up
    assert ref.add(7, 5.0, gathering=True) is None  # back: within sqrt(10) of the range
    assert ref.values == [1.0, 2.0, 4.0, 8.0, 3.0, 5.0]  # the blow-up was kept out of it
    # after the warm-up the range stays 1..8
    assert ref.add(8, 70.0, gathering=False) is None  # within 10x of the range
    assert ref.add(9, 81.0, gathering=False) == (1.0, 8.0)  # left it upwards: warn
    assert ref.add(10, 90.0, gathering=False) is None  # still out: no second warning
    assert ref.add(11, 30.0, gathering=False) is None  # between 10x and sqrt(10)x: still out
    assert ref.add(12, 0.09, gathering=False) is None  # and now below: still the same departure
    assert ref.add(13, 1.0, gathering=False) is None  # back in range
    assert ref.add(14, 0.05, gathering=False) == (1.0, 8.0)  # left it downwards: warn again
    assert ref.add(15, math.inf, gathering=False) is None  # still out (a non-finite value is out)
    assert ref.values == [1.0, 2.0, 4.0, 8.0, 3.0, 5.0]
    restored = monitor.Reference(factor=10)
    restored.load(json.loads(json.dumps(ref.state())))  # what a checkpoint keeps
    assert restored.state() == ref.state()
    short = monitor.Reference(factor=10)  # no warm-up: the first REFERENCE_POINTS values
    for update in range(1, monitor.REFERENCE_POINTS + 3):
        short.add(update, 1.0 + update, gathering=False)
    assert len(short.values) == monitor.REFERENCE_POINTS


def _fake_trainer(updates=41, amp=False):
    return SimpleNamespace(get_num_updates=lambda: updates, data_parallel_rank=0, data_parallel_world_size=1,
                           cfg=SimpleNamespace(common=SimpleNamespace(amp=amp)))  # fmt: skip


def test_a_non_finite_gradient_is_named_by_layer_and_fp16_overflows_warn_after_a_streak(dict_dir, caplog):
    model, task = build(dict_dir, "--arch", "transformer_admin", *SMALL, "--encoder-layers", "2",
                        "--decoder-layers", "3", "--admin-init")  # fmt: skip
    for name, param in model.named_parameters():
        param.grad = torch.zeros_like(param)
    watcher = _monitor(model, task)
    # a measured update: each layer's norm, in the units of the total fairseq reports (here
    # twice the raw gradients', as under a loss scale of 1/2 that fairseq undoes lazily)
    model.encoder.layers[1].fc2.weight.grad[0, :2] = torch.tensor([3.0, 4.0])
    model.decoder.layers[0].self_attn.q_proj.weight.grad[1, 1] = 12.0
    watcher._grads = {}
    watcher.around_clip_grad_norm(_fake_trainer(), lambda clip: torch.tensor(2.0 * 13.0), 0.0)
    assert watcher._grads == pytest.approx({"encoder.0": 0.0, "encoder.1": 10.0, "decoder.0": 24.0,
                                            "decoder.1": 0.0, "decoder.2": 0.0})  # fmt: skip
    watcher._grads = None
    model.decoder.layers[2].fc1.weight.grad[0, 0] = float("nan")
    caplog.set_level(logging.INFO, logger="admin_fairseq.monitor")
    total = watcher.around_clip_grad_norm(_fake_trainer(), lambda clip: torch.tensor(float("nan")), 0.0)
    assert not torch.isfinite(total)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["admin monitor: update 42: the gradient is not finite in 1 of 5 layers: decoder.2"]

    caplog.clear()

    def overflow(clip):
        raise OverflowError("setting loss scale to: 64")

    for _ in range(monitor.OVERFLOW_STREAK):
        with pytest.raises(OverflowError):
            watcher.around_clip_grad_norm(_fake_trainer(), overflow, 0.0)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.INFO] * (monitor.OVERFLOW_STREAK - 1) + [logging.WARNING]
    assert f"{monitor.OVERFLOW_STREAK} fp16 gradient overflows in a row" in caplog.records[-1].getMessage()
    assert "decoder.2" in caplog.records[0].getMessage()

    stopping = _monitor(model, task, stop=True)
    with pytest.raises(SystemExit) as stop:
        stopping.around_clip_grad_norm(_fake_trainer(), lambda clip: torch.tensor(float("inf")), 0.0)
    assert stop.value.code == monitor.EXIT_UNSTABLE


def test_the_flags_are_checked_and_name_themselves(dict_dir):
    for flags, message in ((["--admin-monitor-stop"], "--admin-monitor-stop stops on the monitor"),
                           (["--admin-monitor-interval", "-1"], "--admin-monitor-interval must be"),
                           (["--admin-monitor-interval", "5", "--admin-monitor-factor", "1"],
                            "--admin-monitor-factor must be")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            build(dict_dir, "--arch", "transformer_admin", *SMALL, *flags)
    model, _ = build(dict_dir, "--arch", "transformer_admin", *SMALL, "--admin-monitor-interval", "5")
    assert not hasattr(model, "admin_monitor")  # outside fairseq-train nothing is measured


TRAIN = [
    "--arch", "transformer_admin", *SMALL, "--encoder-layers", "2", "--decoder-layers", "2",
    "--admin-init", "--admin-as-parameter", "--optimizer", "adam", "--lr", "3e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5", "--criterion",
    "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "1024",
    "--max-update", "30", "--seed", "3", "--no-progress-bar", "--no-epoch-checkpoints",
    "--num-workers", "0", "--log-format", "json", "--log-interval", "5", "--cpu",
    "--validate-interval-updates", "15", "--save-interval-updates", "15",
]  # fmt: skip


def _inner(save_dir, log):
    return {int(s["num_updates"]): s for _, s in fairseq_log.records(log.splitlines(), "train_inner")}


@pytest.mark.slow
def test_fairseq_train_logs_the_monitor_to_json_and_tensorboard_and_trains_the_same_model(bible, tmp_path):
    runs = {}
    for name, extra in (("off", []), ("on", ["--admin-monitor-interval", "10", "--tensorboard-logdir",
                                             str(tmp_path / "tb")])):  # fmt: skip
        save_dir = tmp_path / name
        result = run_cli("fairseq-train", bible["bin"], "--user-dir", USER_DIR, *TRAIN, *extra,
                         "--save-dir", save_dir, cwd=tmp_path)  # fmt: skip
        runs[name] = _inner(save_dir, result.stdout + result.stderr)
        (tmp_path / f"{name}.log").write_text(result.stdout + result.stderr)
    assert sorted(runs["on"]) == [5, 10, 15, 20, 25, 30]
    # measuring (in evaluation mode, on rank 0's fixed batch) changes nothing in training
    assert [s["loss"] for s in runs["on"].values()] == [s["loss"] for s in runs["off"].values()]
    for update, stats in runs["on"].items():
        measured = {k: float(v) for k, v in stats.items() if k.startswith(compare.MONITOR_PREFIXES)}
        if update % 10:
            assert not measured, update  # a log line without a measurement has no empty entries
            continue
        shares = {k: v for k, v in measured.items() if k.startswith("share/")}
        assert len(shares) == 2 * 2 + 2 * 3 and all(0 < v < 1 for v in shares.values())
        assert measured["output_change/decoder"] > 0 and measured["output_change/encoder"] > 0
        lr = float(stats["lr"])  # the learning rate after this update; the change used the one before
        assert measured["output_change_per_lr2/decoder"] > 0
        assert sorted(k for k in measured if k.startswith("gnorm/")) == [
            "gnorm/decoder.0", "gnorm/decoder.1", "gnorm/encoder.0", "gnorm/encoder.1"]
        for name in ("encoder.1.ffn", "decoder.0.cross_attn"):
            assert measured[f"omega_min/{name}"] <= measured[f"omega/{name}"] <= measured[f"omega_max/{name}"]
        assert lr > 0
    # the omegas train: their spread grows from zero
    assert float(runs["on"][30]["omega_max/encoder.0.ffn"]) > float(runs["on"][30]["omega_min/encoder.0.ffn"])

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "train_inner"))
    events.Reload()
    assert [e.step for e in events.Scalars("share/decoder.1.cross_attn")] == [10, 20, 30]
    assert [e.step for e in events.Scalars("output_change/decoder")] == [10, 20, 30]

    # the range warnings replayed from the log (test_replay... for a run that has some)
    from conftest import run_module

    replayed = run_module("admin_fairseq.monitor", tmp_path / "on.log", "--warmup", "5", "--lr", "3e-3")
    assert replayed.returncode == 0 and "3 measurements (updates 10-30), warm-up 5, peak lr 0.003, factor 10: 0 warning(s)" in replayed.stdout
    refused = run_module("admin_fairseq.monitor", tmp_path / "off.log", "--lr", "3e-3")
    assert refused.returncode == 2 and "holds no measurement of the monitor" in refused.stderr

    state = read_checkpoint(tmp_path / "on" / "checkpoint_last.pt")["extra_state"]["admin_monitor"]
    assert [u for u, _ in state["valid"]] == [15, 30]  # kept for a resumed run, with the early range
    assert set(state["references"]) >= {"output_change_per_lr2/decoder", "share/encoder.0.self_attn"}


@pytest.mark.slow
def test_two_workers_stop_on_a_warning_logged_once_and_the_train_step_says_so(bible_recipe_data, tmp_path):
    """--admin-monitor-factor just above 1: the first measurement after the early range warns,
    rank 0 alone measures and warns, and both workers stop with EXIT_UNSTABLE."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(bible_recipe_data),
           "--method", "admin", "--depth", "2-2", "--batch", "2x1024", "--recipe", "regular", "--cpu",
           "--cpu-workers", "2", "--size", "cpu", "--save-dir", str(run), "--log-interval", "1",
           "--monitor", "1", "--", "--max-update", "40", "--warmup-updates", "2",
           "--admin-monitor-factor", "1.0001", "--admin-monitor-stop"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == monitor.EXIT_UNSTABLE, output[-4000:]
    log = (run / "train.log").read_text()
    warnings = [line for line in log.splitlines() if "| WARNING | admin_fairseq.monitor |" in line]
    assert len(warnings) >= 1 and "outside" in warnings[0] and "by more than 1.0001x" in warnings[0]
    assert log.count("stopping the run (--admin-monitor-stop)") == 1
    rank1 = (run / "logs" / "rank1.log").read_text()
    assert "admin monitor" not in rank1 and "share/" not in rank1  # logged once, by rank 0
    inner = _inner(run, log)
    assert max(inner) < 40 and all("share/encoder.0.ffn" in s for s in inner.values())
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "stopped by the stability monitor (--admin-monitor-stop)"


def test_the_train_steps_monitor_option_becomes_the_plugins_flag():
    from admin_fairseq.recipes import RecipeError, plan, train

    base = ["--data", "data/wmt17-en-de", "--method", "admin", "--depth", "60-12", "--batch", "8x4096", "--cpu"]
    for extra, interval in (([], None), (["--monitor"], "100"), (["--monitor", "25"], "25")):
        flags = plan.build(train.settings([*base, *extra]))[1].fairseq_flags
        found = flags[flags.index("--admin-monitor-interval") + 1] if "--admin-monitor-interval" in flags else None
        assert found == interval, extra
    with pytest.raises(SystemExit):  # the command line refuses it at the door
        train.settings([*base, "--monitor", "-1"])
    with pytest.raises(RecipeError, match="--monitor must be a number of updates"):  # and so does plan
        plan.build(train.settings(base).replace(monitor=-1))


def test_replay_names_the_sublayer_whose_branch_takes_over_after_the_warm_up(tmp_path):
    """python -m admin_fairseq.monitor on a run folder: its warm-up and peak learning rate
    from run.json, the warnings its measurements give by the monitor's rules."""
    from conftest import run_module

    from admin_fairseq.recipes import plan, train

    run = tmp_path / "run"
    plan.build(train.settings(["--data", str(tmp_path / "data"), "--method", "admin", "--depth", "6-6",
                               "--batch", "1x1024", "--recipe", "regular", "--cpu", "--save-dir", str(run),
                               "--", "--lr", "1e-3", "--warmup-updates", "40"]))[1].write()  # fmt: skip
    lines = []
    for update in range(10, 110, 10):
        late = update > 60
        stats = {"num_updates": str(update), "lr": "0.001", "share/decoder.5.ffn": "0.9" if late else "0.2",
                 "share/encoder.0.ffn": "0.1", "output_change/decoder": "0.002",
                 "output_change_per_lr2/decoder": "2000"}  # fmt: skip
        lines.append(f"2026-12-02 00:00:00 | INFO | train_inner | {json.dumps(stats)}")
    (run / "train.log").write_text("\n".join(lines) + "\n")
    replayed = run_module("admin_fairseq.monitor", run)
    assert replayed.returncode == 0, replayed.stderr
    assert "10 measurements (updates 10-100), warm-up 40, peak lr 0.001, factor 10: 1 warning(s)" in replayed.stdout
    assert ("update 70: decoder.5.ffn's branch-to-skip variance ratio share/(1-share) is 9 (share 0.9), "
            "outside 0.25..0.25 (its range over updates 10-50) by more than 10x") in replayed.stdout
    assert "0 warning(s)" in run_module("admin_fairseq.monitor", run, "--factor", "40").stdout
