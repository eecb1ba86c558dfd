"""Interrupted runs resume exactly: SIGKILL a fairseq-train run after a checkpoint, run the
same command again, and compare with what the killed run logged for the same updates."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch


from admin_fairseq.checkpoints import read as read_checkpoint
from conftest import USER_DIR, cli_path, free_port
from shared_runs import SMALL_SHAPE

DUMP_EACH_RANK = """
import sys
import torch
import fairseq_cli.train as fairseq_train

dump_dir = sys.argv.pop(1)
train_one_epoch = fairseq_train.train


def train_and_dump(cfg, trainer, task, epoch_itr):
    result = train_one_epoch(cfg, trainer, task, epoch_itr)
    weights = {k: v.detach().cpu().clone() for k, v in trainer.get_model().state_dict().items()}
    torch.save(weights, f"{dump_dir}/rank{trainer.data_parallel_rank}.pt")
    return result


fairseq_train.train = train_and_dump
sys.argv[0] = "fairseq-train"
sys.exit(fairseq_train.cli_main())
"""

MODEL = [*SMALL_SHAPE, "--share-all-embeddings"]  # 3L-3L, 32 wide (tests/shared_runs.py)
TRAIN = [
    "--optimizer", "adam", "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "50",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--max-tokens", "512",
    "--seed", "3", "--no-progress-bar", "--log-format", "simple", "--log-interval", "5",
    "--save-interval-updates", "50", "--keep-interval-updates", "2", "--no-epoch-checkpoints",
    "--max-update", "120", "--num-workers", "0", "--disable-validation",
]  # fmt: skip
VARIANTS = {
    "scalar": ["--admin-init"],
    "vector": ["--admin-init", "--admin-as-parameter"],
    "profiled": ["--admin-init", "--admin-profile"],
}
INNER = re.compile(r"train_inner .*?loss=([\d.]+).*?num_updates=(\d+)")


def _command(bible, save_dir, flags):
    return [cli_path("fairseq-train"), str(bible["bin"]), "--user-dir", str(USER_DIR), *MODEL,
            *flags, *TRAIN, "--save-dir", str(save_dir)]  # fmt: skip


def _run_until(cmd, cwd, stop_when, timeout=300):
    """Start ``cmd``; SIGKILL it as soon as ``stop_when(output so far)`` is true."""
    # unbuffered, so that each log line arrives when it is written and the kill lands on time
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)  # fmt: skip
    output, deadline = "", time.monotonic() + timeout
    for line in proc.stdout:
        output += line
        if stop_when(output):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "training did not reach the kill point in time"
    proc.wait()
    return output + proc.stdout.read()


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sigkill_then_same_command_resumes_exactly(bible, tmp_path, variant):
    save_dir = tmp_path / "ckpt"
    cmd = _command(bible, save_dir, VARIANTS[variant])

    def past_first_checkpoint(out):  # killed mid-epoch, 15 updates after the checkpoint at 50
        return "@ 50 updates" in out and any(int(u) >= 65 for _, u in INNER.findall(out))

    killed = _run_until(cmd, tmp_path, past_first_checkpoint)
    assert "Saved checkpoint" in killed
    last = save_dir / "checkpoint_last.pt"
    state = read_checkpoint(last)  # complete and loadable
    assert state["optimizer_history"][-1]["num_updates"] == 50
    assert not list(save_dir.glob("*.tmp"))
    saved_omega = {k: v for k, v in state["model"].items() if k.endswith("_residual.omega")}

    resumed = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 50 updates\)", log)
    assert "Admin profiled" not in log  # profiled omegas come from the checkpoint
    before = {int(u): float(loss) for loss, u in INNER.findall(killed)}
    after = {int(u): float(loss) for loss, u in INNER.findall(log)}
    assert min(after) == 55 and max(after) == 120
    # the same batches, dropout masks and weights: the resumed run repeats the killed one
    for update in (55, 60, 65):
        assert after[update] == pytest.approx(before[update], abs=0.002), (update, before, after)
    final = read_checkpoint(last)
    assert final["optimizer_history"][-1]["num_updates"] == 120
    if variant == "scalar":
        for key, value in saved_omega.items():
            assert torch.equal(final["model"][key], value)
    elif variant == "vector":  # trained on from the restored values
        assert any(not torch.equal(final["model"][k], v) for k, v in saved_omega.items())


@pytest.mark.slow
def test_killed_while_saving_leaves_a_loadable_checkpoint(bible, tmp_path):
    save_dir = tmp_path / "ckpt"
    cmd = _command(bible, save_dir, VARIANTS["vector"])
    # first checkpoint complete, then kill as soon as the second save starts
    out = _run_until(cmd, tmp_path, lambda o: o.count("Preparing to save checkpoint") >= 2)
    assert "Preparing to save checkpoint" in out
    state = read_checkpoint(save_dir / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] in (50, 100)
    for path in save_dir.glob("*.pt"):
        read_checkpoint(path)  # every .pt file there is complete


@pytest.mark.slow
def test_two_cpu_workers_match_one_worker_with_update_freq_2(bible, tmp_path):
    """Two gloo workers (explicit ranks; fairseq's torchrun path divides by the GPU count
    on a CPU) give, after 20 updates, the weights one worker gets with --update-freq 2 on
    the same batches. Dropout is off so that the comparison is exact up to float sums."""
    flags = ["--admin-init", "--admin-as-parameter", "--dropout", "0"]
    shorter = ["--max-update", "20", "--save-interval-updates", "20"]  # after TRAIN: these win
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = _command(bible, tmp_path / "one", flags) + shorter + ["--update-freq", "2", "--cpu"]
    result = subprocess.run(single, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]

    port = free_port()
    dist = ["--cpu", "--ddp-backend", "legacy_ddp", "--distributed-backend", "gloo",
            "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-world-size", "2",
            "--distributed-no-spawn"]  # fmt: skip
    # fairseq saves checkpoints on rank 0 only: each worker runs fairseq-train through a
    # wrapper that also writes its own final weights, so that the ranks can be compared.
    wrapper = tmp_path / "train_and_dump.py"
    wrapper.write_text(DUMP_EACH_RANK)
    procs = [subprocess.Popen([sys.executable, str(wrapper), str(tmp_path)] +
                              _command(bible, tmp_path / "two", flags)[1:] + shorter + dist +
                              ["--distributed-rank", str(rank)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]  # fmt: skip
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "distributed init (rank 1)" in logs[1]
    rank0 = torch.load(tmp_path / "rank0.pt", map_location="cpu")
    rank1 = torch.load(tmp_path / "rank1.pt", map_location="cpu")
    assert rank0.keys() == rank1.keys() and any(k.endswith("omega") for k in rank0)
    differ = [k for k in rank0 if not torch.equal(rank0[k], rank1[k])]
    assert not differ, f"ranks disagree on {differ[:5]}"  # identical, omegas included

    one_state = read_checkpoint(tmp_path / "one" / "checkpoint_last.pt")
    two_state = read_checkpoint(tmp_path / "two" / "checkpoint_last.pt")
    for state in (one_state, two_state):
        assert state["optimizer_history"][-1]["num_updates"] == 20
    one, two = one_state["model"], two_state["model"]
    assert one.keys() == two.keys()
    assert all(torch.equal(two[k], rank0[k]) for k in two)  # the checkpoint is rank 0's weights
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    print(f"max |w(2 workers) - w(1 worker, update-freq 2)| = {worst:.3g}")
    assert worst < 1e-4, worst  # 0 here; other reduction orders may differ in the last bits
    omega = "decoder.layers.2.encoder_attn_residual.omega"
    assert not torch.allclose(one[omega], torch.full_like(one[omega], one[omega][0].item()))


@pytest.mark.slow
def test_sigterm_to_the_train_step_saves_stops_and_resumes_exactly(bible_recipe_data, tmp_path):
    """SIGTERM (a preemption) to the recipe's train step: it passes the signal to its worker,
    which saves checkpoint_last.pt after the update it is in and stops with status 75; the
    same command again resumes and ends with the weights of an uninterrupted run."""
    from admin_fairseq.resilience import EXIT_SAVED

    def command(save_dir):
        return [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(bible_recipe_data),
                "--method", "admin", "--depth", "2-2", "--batch", "1x512", "--recipe", "regular",
                "--cpu", "--size", "cpu", "--updates", "30", "--log-interval", "5",
                "--save-dir", str(save_dir), "--", "--dropout", "0"]  # fmt: skip

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    reference = subprocess.run(command(tmp_path / "whole"), capture_output=True, text=True, env=env, timeout=600)
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]

    run = tmp_path / "stopped"
    proc = subprocess.Popen(command(run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = ""
    for line in proc.stdout:
        output += line
        if '"num_updates": "10"' in line:
            proc.send_signal(signal.SIGTERM)
            break
    output += proc.communicate(timeout=300)[0]
    assert proc.returncode == EXIT_SAVED, output[-3000:]
    assert "SIGTERM received: saving checkpoint_last.pt after this update" in output
    saved = int(re.search(r"checkpoint_last.pt saved at update (\d+) \(SIGTERM\)", output).group(1))
    assert 10 <= saved < 30
    assert '"status": "stopped on a signal (saved; run again to resume)"' in (run / "run.json").read_text()

    again = subprocess.run(command(run), capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"(epoch 1 @ {saved} updates)" in again.stdout
    whole = read_checkpoint(tmp_path / "whole" / "checkpoint_last.pt")["model"]
    resumed = read_checkpoint(run / "checkpoint_last.pt")["model"]
    worst = max((whole[k] - resumed[k]).abs().max().item() for k in whole)
    print(f"stopped by SIGTERM at update {saved}, resumed: max |w - w(uninterrupted)| = {worst:.3g}")
    assert worst == 0.0
