"""End to end through fairseq's own command-line entry points on real parallel text.

A slice of the Bible (en-fr; train 3,000 verses from all books but Mark, test on the first
100 verses of Mark) is fetched and cached by the project's data code, encoded with a joint
sentencepiece model, binarised with ``fairseq-preprocess``, then a 6L-6L Admin model is
trained with ``fairseq-train --user-dir``, reloaded, resumed, and translated with
``fairseq-generate --user-dir``; the output is scored with sacreBLEU.
"""

import re
from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils

from admin_fairseq import plugin
from admin_fairseq.core import calculate_init
from admin_fairseq.evaluation import read_hypotheses, score
from admin_fairseq.checkpoints import read as read_checkpoint

from conftest import BIBLE_TEST_SIZE as TEST_SIZE
from conftest import USER_DIR, run_cli

LAYERS = 6
MODEL = [
    "--arch", "transformer_admin_tiny", "--encoder-layers", str(LAYERS),
    "--decoder-layers", str(LAYERS), "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
    "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--share-all-embeddings", "--admin-init",
]  # fmt: skip
OPTIM = [
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "2e-3",
    "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--warmup-init-lr", "1e-7",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--max-tokens", "1024", "--seed", "1", "--no-progress-bar", "--log-interval", "20",
    "--log-format", "simple", "--save-interval-updates", "100", "--keep-interval-updates", "1",
    "--no-epoch-checkpoints", "--num-workers", "0",
]  # fmt: skip
FIRST_RUN_UPDATES = 300
RESUMED_UPDATES = 400


def _train(bible, save_dir, max_update, *extra):
    result = run_cli(
        "fairseq-train", bible["bin"], "--user-dir", USER_DIR, *MODEL, *OPTIM, *extra,
        "--max-update", max_update, "--save-dir", save_dir, cwd=save_dir.parent,
    )  # fmt: skip
    return result.stdout + result.stderr


def _train_losses(log):
    """[(num_updates, loss)] from fairseq's train_inner log lines."""
    pattern = re.compile(r"train_inner .*?loss=([\d.]+).*?num_updates=(\d+)")
    return [(int(m.group(2)), float(m.group(1))) for m in pattern.finditer(log)]


def _omegas(state_dict):
    return {k: v for k, v in state_dict.items() if k.endswith("_residual.omega")}


def _assert_rebuilt_as_saved(checkpoint, layers):
    """The omegas in the file are those of the model fairseq rebuilds from it; returns them."""
    saved = _omegas(read_checkpoint(checkpoint)["model"])
    assert len(saved) == 2 * layers + 3 * layers
    plugin.load()  # what --user-dir does in fairseq's commands
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
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
def test_train_reload_resume_generate_score(bible, tmp_path):
    """The chain with a trained vector omega (--admin-as-parameter). The scalar form (a
    buffer) is checked on the shared model the deployment tests translate with
    (test_a_scalar_omega_is_saved_as_initialised_and_rebuilt_as_saved), its resume in
    tests/test_kill_resume.py."""
    save_dir = tmp_path / "checkpoints"

    # 1. train a deep Admin model for a few hundred updates: the loss must fall
    log = _train(bible, save_dir, FIRST_RUN_UPDATES, "--admin-as-parameter")
    losses = _train_losses(log)
    assert losses and losses[-1][0] == FIRST_RUN_UPDATES, log[-3000:]
    assert losses[-1][1] < losses[0][1] - 2.0, losses

    # 2. reload: omega in the checkpoint file == omega in the model fairseq rebuilds from it
    last = save_dir / "checkpoint_last.pt"
    saved = _assert_rebuilt_as_saved(last, LAYERS)
    enc_key = "encoder.layers.0.self_attn_residual.omega"
    assert saved[enc_key].shape == (64,)  # a trained vector: it moved away from its initial value
    assert not torch.allclose(saved[enc_key], torch.full((64,), calculate_init(2 * LAYERS)))

    # 3. resume: the same command with a later --max-update continues from update 300
    log = _train(bible, save_dir, RESUMED_UPDATES, "--admin-as-parameter")
    assert re.search(rf"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ {FIRST_RUN_UPDATES} updates\)", log), log[-3000:]
    resumed = _train_losses(log)
    assert resumed[0][0] > FIRST_RUN_UPDATES and resumed[-1][0] == RESUMED_UPDATES
    assert abs(resumed[0][1] - losses[-1][1]) < 1.0, (losses[-1], resumed[0])

    # 4. generate with the plugin and score every test sentence with sacreBLEU
    result = run_cli(
        "fairseq-generate", bible["bin"], "--user-dir", USER_DIR, "--path", last,
        "--gen-subset", "test", "--beam", "4", "--batch-size", "64",
        "--required-batch-size-multiple", "1", "--bpe", "sentencepiece",
        "--sentencepiece-model", bible["raw"] / "spm.model", cwd=tmp_path,
    )  # fmt: skip
    hyps = read_hypotheses(result.stdout.splitlines(), TEST_SIZE)
    refs = Path(bible["raw"] / "test.fr").read_text(encoding="utf-8").splitlines()
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


VARIANTS = {
    "post-ln": [],
    "pre-ln": ["--encoder-normalize-before", "--decoder-normalize-before"],
    "admin": ["--admin-init"],
    "admin-profiled": ["--admin-init", "--admin-profile"],
    "deepnet": ["--deepnet"],
}
SMALL_MODEL = [
    "--arch", "transformer_admin_tiny", "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--share-all-embeddings",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_trains_through_fairseq_train(bible, tmp_path, variant):
    """One preset, every variant by flags only; the profiled one profiles once, not on resume."""
    def train(max_update):
        result = run_cli("fairseq-train", bible["bin"], "--user-dir", USER_DIR, *SMALL_MODEL,
                         *VARIANTS[variant], *OPTIM, "--max-update", max_update,
                         "--log-interval", "10", "--save-dir", tmp_path / "ckpt", cwd=tmp_path)  # fmt: skip
        return result.stdout + result.stderr

    log = train(30)
    losses = _train_losses(log)
    assert [u for u, _ in losses] == [10, 20, 30] and losses[-1][1] < losses[0][1], losses
    profiled = len(re.findall(r"Admin profiled \d+ (encoder|decoder) omegas", log))
    assert profiled == (2 if variant == "admin-profiled" else 0)
    log = train(40)
    assert "(epoch 1 @ 30 updates)" in log
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
