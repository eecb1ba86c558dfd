"""Export of trained Admin checkpoints to plain fairseq `transformer` checkpoints.

Small models are trained on the Bible slice through fairseq-train, exported with the
script, then compared with the original on real test sentences (teacher-forced
log-probabilities) and through fairseq-generate, the export loaded *without* --user-dir.
"""

import math
import re
import subprocess
import sys

import pytest
import torch

from admin_fairseq.export import max_logprob_difference

from conftest import REPO, USER_DIR, run_cli

SHAPE = [
    "--arch", "transformer_admin_tiny", "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
]  # fmt: skip
TRAIN = [
    "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
    "--warmup-updates", "40", "--criterion", "label_smoothed_cross_entropy",
    "--label-smoothing", "0.1", "--max-tokens", "1024", "--max-update", "120", "--seed", "2",
    "--no-progress-bar", "--no-epoch-checkpoints", "--num-workers", "0",
]  # fmt: skip

CASES = {
    # name: (flags, exact)
    "vector, layernorm-embedding": (
        ["--admin-init", "--admin-as-parameter", "--layernorm-embedding", "--share-all-embeddings"], True),
    "scalar, layernorm-embedding": (
        ["--admin-init", "--admin-output-change-scale", "O(1)", "--layernorm-embedding",
         "--share-all-embeddings"], True),
    "vector, learned positions, untied embeddings": (
        ["--admin-init", "--admin-as-parameter", "--encoder-learned-pos", "--decoder-learned-pos"], True),
    "deepnet, layernorm-embedding": (["--deepnet", "--layernorm-embedding", "--share-all-embeddings"], True),
    "profiled vector, layernorm-embedding": (
        ["--admin-init", "--admin-profile", "--layernorm-embedding", "--share-all-embeddings"], True),
    "scalar, shared embeddings, sinusoidal": (
        ["--admin-init", "--share-all-embeddings"], False),
}  # fmt: skip


def _train(bible, save_dir, flags):
    run_cli("fairseq-train", bible["bin"], "--user-dir", USER_DIR, *SHAPE, *flags, *TRAIN,
            "--save-dir", save_dir, cwd=save_dir.parent)  # fmt: skip
    return save_dir / "checkpoint_last.pt"


def _export(src, dst, cwd, check=True):
    cmd = [sys.executable, str(REPO / "scripts" / "export_transformer.py"), "--input", str(src),
           "--output", str(dst), "--subset", "test"]  # fmt: skip
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _hypotheses(bible, path, cwd, plugin):
    extra = ["--user-dir", USER_DIR] if plugin else []
    result = run_cli(
        "fairseq-generate", bible["bin"], *extra, "--path", path, "--gen-subset", "test",
        "--beam", "4", "--batch-size", "32", "--required-batch-size-multiple", "1", cwd=cwd,
    )  # fmt: skip
    hyps = {i: (float(score), text) for i, score, text in
            re.findall(r"^H-(\d+)\t(\S+)\t(.*)$", result.stdout, flags=re.M)}  # fmt: skip
    assert len(hyps) == 100
    return hyps


@torch.no_grad()
def _teacher_forced_scores(path, pairs):
    """fairseq-generate's score (mean log-probability per target token, eos included, in
    base 2 as generate prints it) of each (test sentence id, hypothesis) pair under the
    checkpoint at `path`."""
    from admin_fairseq.export import _load

    model, task = _load(path, None)
    task.load_dataset("test")
    dataset, tgt_dict = task.dataset("test"), task.target_dictionary
    scores = []
    for sample_id, text in pairs:
        sample = dataset[int(sample_id)]
        target = tgt_dict.encode_line(text, add_if_not_exist=False, append_eos=True).long()
        assert tgt_dict.unk() not in target.tolist()
        prev = torch.cat([target.new_tensor([tgt_dict.eos()]), target[:-1]])
        logits = model(sample["source"][None], torch.tensor([len(sample["source"])]), prev[None])
        lprobs = model.get_normalized_probs(logits, log_probs=True)[0].float()
        scores.append(lprobs.gather(1, target[:, None]).mean().item() / math.log(2))
    return scores


def assert_same_translations(admin_path, plain_path, admin_hyps, plain_hyps, max_lines=3):
    """The export translates as the Admin model does, line by line; a differing line is
    accepted only where it is beam search, not the model, that differs: both models give
    both hypotheses the same score (< 1e-4, their log-probabilities agree to < 1e-5), and
    generate's own scores are those scores. Such a line is a near-tie in the beam's pruning
    that the last bits of the arithmetic decide; only a few may occur."""
    assert admin_hyps.keys() == plain_hyps.keys()
    differing = sorted(i for i in admin_hyps if admin_hyps[i][1] != plain_hyps[i][1])
    assert len(differing) <= max_lines, f"{len(differing)} of {len(admin_hyps)} lines differ"
    if not differing:
        return
    pairs = [(i, hyps[i][1]) for i in differing for hyps in (admin_hyps, plain_hyps)]
    under_admin = _teacher_forced_scores(admin_path, pairs)
    under_plain = _teacher_forced_scores(plain_path, pairs)
    for k, (i, _) in enumerate(pairs):
        assert abs(under_admin[k] - under_plain[k]) < 1e-4, (i, under_admin[k], under_plain[k])
    for k, i in enumerate(differing):
        assert abs(under_admin[2 * k] - admin_hyps[i][0]) < 1e-4
        assert abs(under_plain[2 * k + 1] - plain_hyps[i][0]) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_export_matches_the_admin_model(bible, tmp_path, case):
    flags, exact = CASES[case]
    ckpt = _train(bible, tmp_path / "ckpt", flags)
    plain = tmp_path / "plain.pt"
    result = _export(ckpt, plain, tmp_path)
    assert "no --user-dir needed" in result.stdout
    assert ("approximate:" in result.stdout) is (not exact)
    # the export holds no plugin classes: torch's weights_only load takes it as it is
    state = torch.load(plain, map_location="cpu", weights_only=True)
    assert state["cfg"]["model"]["arch"] == "transformer"
    assert not any(k.endswith("_residual.omega") for k in state["model"])

    diff, described = max_logprob_difference(ckpt, plain, subset="test", max_sentences=100)
    assert "sentences of 'test'" in described
    if exact:
        assert diff < 1e-5, diff
    else:  # the first sub-layer of each stack keeps LayerNorm eps 1e-5 instead of eps/omega^2
        assert diff < 1e-4, diff
    reported = float(re.search(r"= (\S+) over", result.stdout).group(1))
    assert reported < (1e-5 if exact else 1e-4)

    # plain fairseq-generate (no plugin) translates as the Admin model does; these barely
    # trained models write repetitive output up to the length limit, where beam search meets
    # near-ties now and then
    assert_same_translations(
        ckpt, plain,
        _hypotheses(bible, ckpt, tmp_path, plugin=True),
        _hypotheses(bible, plain, tmp_path, plugin=False),
    )  # fmt: skip


@pytest.mark.slow
def test_refuses_vector_omega_it_cannot_fold(bible, tmp_path):
    ckpt = _train(bible, tmp_path / "ckpt", ["--admin-init", "--admin-as-parameter",
                                             "--share-all-embeddings"])  # fmt: skip
    plain = tmp_path / "plain.pt"
    result = _export(ckpt, plain, tmp_path, check=False)
    assert result.returncode == 2
    assert "cannot fold the per-dimension omega of the first encoder sub-layer" in result.stderr
    assert "sinusoidal" in result.stderr and "--layernorm-embedding" in result.stderr
    assert "nothing was written" in result.stderr
    assert not plain.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary file left either


@pytest.mark.slow
def test_refuses_a_checkpoint_that_is_not_admin(bible, tmp_path):
    save_dir = tmp_path / "ckpt"
    run_cli("fairseq-train", bible["bin"], "--arch", "transformer_tiny", *TRAIN,
            "--max-update", "2", "--save-dir", save_dir, cwd=tmp_path)  # fmt: skip
    plain = tmp_path / "plain.pt"
    result = _export(save_dir / "checkpoint_last.pt", plain, tmp_path, check=False)
    assert result.returncode == 2
    assert "'transformer_tiny' model, not transformer_admin" in result.stderr
    assert not plain.exists()
