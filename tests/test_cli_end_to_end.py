"""End to end through fairseq's own command-line entry points on real parallel text.

The README's example (tests/shared_runs.py) prepares a slice of the Bible (en-fr; train 3,000
verses from all books but Mark, test on the first 100 verses of Mark), trains a 6L-6L Admin
model with a trained vector omega through ``fairseq-train --user-dir`` and translates the
test set with ``fairseq-generate --user-dir``, as written there. Here that run is reloaded,
resumed and scored with sacreBLEU; smaller models train every variant by flags.
"""

import re
import shutil

import pytest
import torch
from fairseq import checkpoint_utils

from admin_fairseq import plugin
from admin_fairseq.core import calculate_init
from admin_fairseq.evaluation import read_hypotheses, score
from admin_fairseq.checkpoints import read as read_checkpoint

from conftest import BIBLE_TEST_SIZE as TEST_SIZE
from conftest import USER_DIR, run_cli, train_in_process
import shared_runs
from shared_runs import readme_argv

LAYERS = 6  # the README example's model
OPTIM = [
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--warmup-init-lr", "1e-7",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--max-tokens", "1024", "--seed", "1", "--no-progress-bar", "--log-interval", "20",
    "--log-format", "simple", "--save-interval-updates", "100", "--keep-interval-updates", "1",
    "--no-epoch-checkpoints", "--num-workers", "0",
]  # fmt: skip


def _train_losses(log):
    """[(num_updates, loss)] from fairseq's train_inner log lines."""
    pattern = re.compile(r"train_inner .*?loss=([\d.]+).*?num_updates=(\d+)")
    return [(int(m.group(2)), float(m.group(1))) for m in pattern.finditer(log)]


def _omegas(state_dict):
    return {k: v for k, v in state_dict.items() if k.endswith("_residual.omega")}


def _assert_rebuilt_as_saved(checkpoint, layers, data=None):
    """The omegas in the file are those of the model fairseq rebuilds from it (with the data
    folder ``data`` where the run's was a relative path); returns them."""
    saved = _omegas(read_checkpoint(checkpoint)["model"])
    assert len(saved) == 2 * layers + 3 * layers
    plugin.load()  # what --user-dir does in fairseq's commands
    overrides = {"data": str(data)} if data else None
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)], arg_overrides=overrides)
    rebuilt = _omegas(models[0].state_dict())
    assert saved.keys() == rebuilt.keys()
    for key, value in saved.items():
        assert torch.equal(rebuilt[key], value), key
    return saved


@pytest.mark.slow
def test_a_scalar_omega_is_saved_as_initialised_and_rebuilt_as_saved(trained):
    """Without --admin-as-parameter omega is a buffer: after 250 updates of fairseq-train
    each is still its initial value, one number per sub-layer, and reloads as saved."""
    layers = 3  # tests/shared_runs.py's deployment models
    saved = _assert_rebuilt_as_saved(trained("scalar omega"), layers)
    enc_init, dec_init = calculate_init(2 * layers), calculate_init(3 * layers)
    for key, value in saved.items():
        assert value.shape == (1,), key
        expected = enc_init if key.startswith("encoder.") else dec_init
        assert value.item() == pytest.approx(expected, abs=1e-6), key


@pytest.mark.slow
def test_train_reload_resume_generate_score(bible, readme_run, tmp_path):
    """The chain on the README example's run, a trained vector omega (--admin-as-parameter).
    The scalar form (a buffer) is checked on the shared model the deployment tests translate
    with (test_a_scalar_omega_is_saved_as_initialised_and_rebuilt_as_saved), its resume in
    tests/test_kill_resume.py."""
    log = (readme_run / "example.log").read_text()
    train_argv = readme_argv(1)
    updates = int(train_argv[train_argv.index("--max-update") + 1])

    # 1. the deep Admin model trained for a few hundred updates: the loss fell (the first
    # logged value is the mean over updates 1-100, fairseq's default log interval)
    losses = _train_losses(log)
    assert losses and losses[-1][0] == updates, log[-3000:]
    assert losses[-1][1] < losses[0][1] - 1.5, losses

    # 2. reload: omega in the checkpoint file == omega in the model fairseq rebuilds from it
    last = readme_run / train_argv[train_argv.index("--save-dir") + 1] / "checkpoint_last.pt"
    saved = _assert_rebuilt_as_saved(last, LAYERS, data=bible["bin"])  # the README's data/... path
    enc_key = "encoder.layers.0.self_attn_residual.omega"
    assert saved[enc_key].shape == (64,)  # a trained vector: it moved away from its initial value
    assert not torch.allclose(saved[enc_key], torch.full((64,), calculate_init(2 * LAYERS)))

    # 3. resume: the README's command with a later --max-update (and a shorter log interval)
    # continues from the last update, in a copy of the run's folder
    save_dir = tmp_path / "checkpoints"
    save_dir.mkdir()
    shutil.copy(last, save_dir / "checkpoint_last.pt")
    assert train_argv[0] == "fairseq-train"
    result = run_cli(*train_argv, "--max-update", updates + 50, "--log-interval", "10", "--save-dir", save_dir,
                     cwd=readme_run)  # fmt: skip
    resumed_log = result.stdout + result.stderr
    assert re.search(rf"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ {updates} updates\)", resumed_log), \
        resumed_log[-3000:]  # fmt: skip
    resumed = _train_losses(resumed_log)
    assert resumed[0][0] > updates and resumed[-1][0] == updates + 50
    assert abs(resumed[0][1] - losses[-1][1]) < 1.0, (losses[-1], resumed[0])

    # 4. the README's fairseq-generate translated every test sentence; score them with sacreBLEU
    hyps = read_hypotheses(log.splitlines(), TEST_SIZE)
    refs = (bible["raw"] / "test.fr").read_text(encoding="utf-8").splitlines()
    assert len(refs) == TEST_SIZE
    assert sum(bool(h.strip()) for h in hyps) > TEST_SIZE // 2
    scores = score(hyps, refs)
    assert 0.0 <= scores["bleu"] <= 100.0
    assert scores["chrf"] > 0.0
    assert "nrefs:1" in scores["bleu_signature"]
    print(f"vector: BLEU {scores['bleu']:.2f} chrF {scores['chrf']:.1f} ({scores['bleu_signature']})")


def test_cli_rejects_unknown_output_change_scale(dict_dir, tmp_path):
    result = run_cli(
        "fairseq-train", dict_dir, "--user-dir", USER_DIR, "--arch", "transformer_admin_tiny",
        "--admin-init", "--admin-output-change-scale", "O(log n)", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--admin-output-change-scale" in result.stderr
    assert "O(logn)" in result.stderr and "O(1)" in result.stderr


VARIANTS = {  # the flags of each variant, or the shared model (tests/shared_runs.py) that is it
    "post-ln": [],
    "pre-ln": ["--encoder-normalize-before", "--decoder-normalize-before"],
    "admin": "small vector omega",
    "admin-profiled": "small profiled omega",
    "deepnet": "small deepnet",
}
SMALL_MODEL = [*shared_runs.SMALL_SHAPE, "--share-all-embeddings"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_through_fairseq_train(bible, trained, tmp_path, variant):
    """One preset, every variant by flags only: the loss falls; the profiled one profiles
    once, not on resume. The Admin and DeepNet variants are the export tests' shared models
    (120 updates); the two baselines train 30 updates here."""
    def train(flags, save_dir):
        return train_in_process(bible["bin"], "--user-dir", USER_DIR, *flags, "--save-dir", save_dir,
                                cwd=tmp_path).stdout  # fmt: skip

    if isinstance(VARIANTS[variant], str):
        checkpoint = trained(VARIANTS[variant])
        flags = shared_runs.MODELS[VARIANTS[variant]]
        log = shared_runs.train_log(checkpoint)
    else:
        flags = [*SMALL_MODEL, *VARIANTS[variant], *shared_runs.SMALL_TRAIN, "--max-update", "30"]
        log = train(flags, tmp_path / "first")
        checkpoint = tmp_path / "first" / "checkpoint_last.pt"
    updates = int([flags[i + 1] for i, flag in enumerate(flags) if flag == "--max-update"][-1])  # argparse: the last
    losses = _train_losses(log)
    assert [u for u, _ in losses] == list(range(10, updates + 1, 10)) and losses[-1][1] < losses[0][1], losses
    profiled = len(re.findall(r"Admin profiled \d+ (encoder|decoder) omegas", log))
    assert profiled == (2 if variant == "admin-profiled" else 0)

    resumed = tmp_path / "resumed"  # the same command, a later stop, from a copy of the checkpoint
    resumed.mkdir()
    shutil.copy(checkpoint, resumed / "checkpoint_last.pt")
    log = train([*flags, "--max-update", updates + 10], resumed)
    assert f"(epoch 1 @ {updates} updates)" in log
    assert "Admin profiled" not in log


@pytest.mark.slow
def test_profiled_admin_on_two_cpu_workers(bible, tmp_path):
    """Two fairseq-train processes (gloo, explicit ranks: on a CPU, fairseq's torchrun path
    divides by the GPU count) profile on rank 0's batch, broadcast and finish together."""
    import os
    import subprocess

    from conftest import cli_path, free_port

    port = free_port()
    common = [cli_path("fairseq-train"), str(bible["bin"]), "--user-dir", str(USER_DIR),
              *SMALL_MODEL, "--admin-init", "--admin-profile", *OPTIM, "--max-update", "20",
              "--log-interval", "10", "--save-dir", str(tmp_path / "ckpt"), "--cpu",
              "--ddp-backend", "legacy_ddp", "--distributed-backend", "gloo",
              "--distributed-init-method", f"tcp://127.0.0.1:{port}",
              "--distributed-world-size", "2", "--distributed-no-spawn"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([*common, "--distributed-rank", str(rank)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for rank in (0, 1)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "distributed init (rank 1)" in logs[1]
    assert len(re.findall(r"Admin profiled \d+ (encoder|decoder) omegas", logs[0])) == 2
    assert _train_losses(logs[0])[-1][0] == 20
    state = read_checkpoint(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert state["model"]["admin_omega_profiled"].item() == 1
