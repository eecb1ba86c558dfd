"""The commands GPU users run, tested as they are built.

Two halves:

1. (cheap, no training) every command the recipes build for GPUs is built once as a GPU user
   gets it and once with ``--cpu``; the two may differ only by ``plan.CPU_CHANGES`` (the
   ``--cpu`` flag, fp32 in place of the recipe's fp16 flags, gloo with several workers), the
   list that docs/development.md explains entry by entry.
2. (slow) the GPU command itself, with ``--cpu`` appended, trains on the CPU through the
   suite's shim for fairseq's GPU code (tests/gpu_on_cpu), at a tiny model size and a few
   updates (:data:`TEST_SIZE`), once per distinct path: each optimizer x precision of the
   recipes with each method family. Each run then goes through the evaluate step (averaging,
   generate, sacreBLEU and tokenized BLEU) and the CTranslate2 conversion (which exports
   the Admin model to a plain transformer first).
"""

import itertools
import json
import re
import sys

import pytest
import torch

from admin_fairseq import main_job
from admin_fairseq.recipes import RecipeError, plan, published
from conftest import REPO
from recipe_runs import _args, evaluate_and_convert, gpu_on_cpu, train_gpu_command
from recipe_runs import state as saved_state

# ------------------------------------------------------------------ 1. the commands, built

#: the differences a --cpu command may have from the GPU one; each is explained in
#: docs/development.md under the same name
ALLOWED = ("--cpu", "fp32", "gloo")
PUBLISHED_BATCHES = tuple(published.PUBLISHED_BATCHES)  # 8x4096 128x4096 80x8000 256x5000 1x4096
SLURM_ENV = {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NTASKS": "8"}
FORMS = {  # how the workers are started: (nodes, per node, extra train-step flags, environment)
    "one-gpu": (1, 1, [], {}),
    "one-node": (1, 8, [], {}),
    "two-nodes": (2, 4, ["--nodes", "2", "--node-rank", "1", "--master-addr", "10.1.2.3"], {}),
    "slurm": (2, 4, ["--slurm"], SLURM_ENV),
}


def _build_pair(method, batch, form):
    """GPU and CPU ``(commands, info)``; None when neither can reach the batch exactly
    (IWSLT's 1x4096 on 8 workers), which both must then refuse alike."""
    nodes, per_node, flags, env = FORMS[form]
    common = ["--data", "data/wmt", "--method", method, "--depth", "6-6", "--batch", batch, *flags]
    cpu_flags = ["--cpu-workers", str(per_node)] if form != "slurm" else []
    built = []
    for argv in ([*common, "--gpus", str(per_node)], [*common, "--cpu", *cpu_flags]):
        try:
            built.append(plan.build(_args(argv), env=env))
        except RecipeError as err:
            assert "cannot be reached exactly" in str(err)
            built.append(None)
    assert (built[0] is None) == (built[1] is None)
    return None if built[0] is None else built


def _groups(command):
    return [tuple(g) for g in plan._flag_groups(command[command.index("--") + 1:])]


def assert_only_allowed_changes(gpu, cpu):
    """``gpu`` and ``cpu`` are ``(commands, info)``: the same commands but for ALLOWED."""
    (gpu_commands, gpu_info), (cpu_commands, cpu_info) = gpu, cpu
    assert len(gpu_commands) == len(cpu_commands)
    fp16 = {tuple(g) for g in plan._flag_groups(published.RECIPES[gpu_info.recipe]["fp16"])}
    for g_cmd, c_cmd in zip(gpu_commands, cpu_commands):
        launcher = g_cmd[:g_cmd.index("--") + 1]
        assert c_cmd[:c_cmd.index("--") + 1] == launcher  # same launcher, same worker count
        g_groups, c_groups = _groups(g_cmd), _groups(c_cmd)
        removed = [g for g in g_groups if g not in c_groups]
        added = [g for g in c_groups if g not in g_groups]
        assert set(removed) == fp16, f"removed: {removed}"  # "fp32"
        expected = [("--cpu",)]
        if gpu_info.workers > 1:  # "gloo" (a profiling run derived from it keeps its flags)
            expected += [tuple(g) for g in plan._flag_groups(plan.CPU_DISTRIBUTED)]
        assert added == expected, f"added: {added}"
        kept = [g for g in g_groups if g not in fp16]
        assert [g for g in c_groups if g in kept] == kept  # everything else, in the same order
    same = ("workers", "update_freq", "max_tokens", "recipe", "arch", "seed", "avg_epochs")
    assert {k: getattr(cpu_info, k) for k in same} == {k: getattr(gpu_info, k) for k in same}


def test_cpu_changes_are_the_named_ones():
    assert tuple(plan.CPU_CHANGES) == ALLOWED  # each explained in docs/development.md (tests/test_docs.py)


@pytest.mark.parametrize("batch,form", itertools.product(PUBLISHED_BATCHES, FORMS))
def test_every_recipe_command_is_the_gpu_command_but_for_the_named_changes(batch, form):
    for method in published.METHODS:
        pair = _build_pair(method, batch, form)
        if pair is None:
            assert batch == "1x4096" and form != "one-gpu"
            continue
        gpu, cpu = pair
        assert_only_allowed_changes(gpu, cpu)
        if method == "admin-profiled" and batch in ("80x8000", "256x5000", "1x4096"):
            # plain --fp16: a profiling run on one worker first, on the CPU too
            assert len(gpu[0]) == 2 and "--admin-profile-to" in gpu[0][0]


def test_the_main_jobs_gpu_command_is_its_cpu_command_but_for_the_named_changes(tmp_path):
    for method in ("post-ln", "admin", "pre-ln", "deepnet", "admin-profiled"):
        commands = {}
        for gpus in (1, 0):
            settings = main_job.settings_from(main_job.parse_args(["--gpus", str(gpus)]))
            commands[gpus] = main_job.training_command(settings, method, tmp_path / "data", tmp_path / method)
        assert_only_allowed_changes(commands[1], commands[0])


def test_cpu_with_the_recipes_fp16_is_refused_with_the_reason():
    with pytest.raises(RecipeError, match=r"--cpu --precision recipe: .* needs CUDA in fairseq 0.12"):
        plan.build(_args(["--data", "d", "--method", "admin", "--depth", "2-2", "--batch", "8x4096",
                           "--cpu", "--precision", "recipe"]), env={})  # fmt: skip


_FLAT_VS_SEPARATE = """
import json, sys, torch
from admin_fairseq import plugin
plugin.load()  # registers --optimizer radam
from omegaconf import OmegaConf
from fairseq.optim.fp16_optimizer import FP16Optimizer

def run(flatten):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape).half()) for shape in ((5, 3), (7,), (2, 2, 2))]
    cfg = OmegaConf.create({
        "common": {"fp16_init_scale": 4, "fp16_scale_window": 256, "fp16_scale_tolerance": 0.0,
                   "threshold_loss_scale": 0.03125, "min_loss_scale": 1e-4, "bf16": False,
                   "fp16_no_flatten_grads": not flatten},
        "distributed_training": {"distributed_world_size": 1},
        "optimization": {"update_freq": [1], "lr": [1e-2]},
        "optimizer": {"_name": "radam", "adam_betas": "(0.9, 0.98)", "adam_eps": 1e-8,
                      "weight_decay": 1e-2, "lr": [1e-2]}})
    optimizer = FP16Optimizer.build_optimizer(cfg, params)
    inputs = torch.Generator().manual_seed(1)
    for _ in range(12):  # past RAdam's first un-adapted steps
        optimizer.zero_grad()
        loss = sum((p.float() * torch.randn(p.shape, generator=inputs)).sum() for p in params)
        optimizer.backward(loss)
        optimizer.step()
    return [p.float().tolist() for p in params], optimizer.fp32_params

flat, masters = run(True)
separate, _ = run(False)
print(json.dumps({"equal": flat == separate, "flat_master": torch.is_tensor(masters[None])}))
"""


@pytest.mark.slow
def test_radam_with_flat_fp32_master_weights_updates_as_without():
    """fairseq's FP16Optimizer keeps the fp32 master weights of plain --fp16 in one flat
    tensor on a GPU; RAdam declares that it supports that, and twelve steps with and without
    flattening end with the same weights (run under the shim, which is the GPU code path)."""
    import subprocess

    result = subprocess.run([sys.executable, "-c", _FLAT_VS_SEPARATE], capture_output=True, text=True,
                            env=gpu_on_cpu.ENV, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"equal": True, "flat_master": True}


def test_the_omega_fp16_bounds():
    sys.path.insert(0, str(REPO / "scripts"))
    import omega_fp16

    assert omega_fp16.adam_step_bound(0.9, 0.98, 1) == pytest.approx(1.0)
    assert omega_fp16.LONG_RUN_BOUND == pytest.approx(1.6977, abs=1e-4)
    # the regular batch: lr reaches 1e-3 at update 8,000; above 0.000977 from 7,813 to 8,388
    assert omega_fp16.moving_window(1e-3, 8000, 2**-10) == (7813, 8388)
    assert omega_fp16.moving_window(1.5e-3, 4000, 2**-9) is None  # omega in [4, 8): 100L


# ------------------------------------------------------------------ 2. the commands, trained

@pytest.mark.slow
@pytest.mark.parametrize("method", ["admin", "admin-scalar", "deepnet", "post-ln", "pre-ln"])
def test_adam_memory_efficient_fp16_recipe_trains_evaluates_and_converts(bible_recipe_data, tmp_path, method):
    """admin-torch's recipe (Adam, --memory-efficient-fp16) as a GPU gets it, each method."""
    run = tmp_path / "run"
    commands, info, log = train_gpu_command(bible_recipe_data, run, method, "8x4096")
    assert "--memory-efficient-fp16" in commands[-1] and "--fp16-no-flatten-grads" not in commands[-1]
    state = saved_state(run)
    assert state["cfg"]["common"]["memory_efficient_fp16"] and state["cfg"]["optimizer"]["_name"] == "adam"
    assert state["optimizer_history"][-1]["num_updates"] >= 2
    evaluate_and_convert(bible_recipe_data, run, tmp_path)


@pytest.mark.slow
def test_two_gpu_command_with_in_run_profile_broadcast_save_and_resume(bible_recipe_data, tmp_path):
    """The one-node two-GPU command (torchrun, NCCL, pytorch_ddp) of the admin-torch recipe
    with profiled Admin: the profile is taken inside the run and broadcast from rank 0; the
    same command run again with a later stop resumes from checkpoint_last.pt; then the
    evaluate step and the CTranslate2 conversion."""
    run = tmp_path / "run"
    commands, info, log = train_gpu_command(bible_recipe_data, run, "admin-profiled", "8x4096", gpus=2)
    assert commands[-1][1:5] == ["-m", "admin_fairseq.local_torchrun", "--nproc-per-node", "2"]
    assert "--distributed-backend" not in commands[-1] and "--ddp-backend" not in commands[-1]
    assert "Admin profiled 4 encoder omegas" in log
    assert "rank 1 of 2" in (run / "logs" / "rank1.log").read_text()
    updates = saved_state(run)["optimizer_history"][-1]["num_updates"]
    commands, info, log = train_gpu_command(bible_recipe_data, run, "admin-profiled", "8x4096", gpus=2,
                                            extra=["--max-epoch", "3", "--max-update", str(updates + 1)])  # fmt: skip
    assert re.search(rf"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ {updates} updates\)", log)
    assert saved_state(run)["optimizer_history"][-1]["num_updates"] == updates + 1
    evaluate_and_convert(bible_recipe_data, run, tmp_path)  # epochs 1-2 of the two-worker run


@pytest.mark.slow
@pytest.mark.parametrize("lr,moves", [("1.5e-3", True), ("9e-4", False)])
def test_vector_omegas_under_memory_efficient_fp16_move_only_above_half_the_fp16_spacing(
        bible_recipe_data, tmp_path, lr, moves):  # fmt: skip
    """scripts/omega_fp16.py's rule, run: under --memory-efficient-fp16 the 6L-6L vector
    omegas (in [2, 4): fp16 spacing 2**-9) move at the huge batch's peak lr 1.5e-3 and
    cannot at 9e-4, where even Adam's largest possible step in 10 updates (1.03 x lr)
    stays below half that spacing (0.000977). The huge recipe's command as a GPU gets it,
    its peak reached after 4 updates; one batch per update, so that 10 updates run on the
    test corpus."""
    sys.path.insert(0, str(REPO / "scripts"))
    import omega_fp16
    from admin_fairseq.core.omega import calculate_init

    start = {side: torch.tensor(calculate_init(n, "O(logn)")).half().float() for side, n in
             (("encoder", 12), ("decoder", 18))}  # fmt: skip
    largest_step = float(lr) * omega_fp16.adam_step_bound(*omega_fp16.ADAM_BETAS, 10)
    assert (largest_step > omega_fp16.smallest_surviving_step(start["encoder"].item())) is moves
    run = tmp_path / "run"
    train_gpu_command(bible_recipe_data, run, "admin", "128x4096", depth="6-6",
                      extra=["--lr", lr, "--update-freq", "1", "--max-update", "10"])  # fmt: skip
    state = saved_state(run)
    assert state["optimizer_history"][-1]["num_updates"] == 10
    omegas = {k: v for k, v in state["model"].items() if k.endswith("_residual.omega")}
    assert len(omegas) == 5 * 6
    changed = 0
    for key, omega in omegas.items():
        assert omega.half().float().equal(omega)  # fp16 values, saved as fp32
        changed += int((omega != start[key.split(".")[0]]).sum())
    assert (changed > 0) is moves, f"{changed} omega entries changed"
