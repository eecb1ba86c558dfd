"""Export of trained Admin checkpoints to plain fairseq `transformer` checkpoints.

Small models are trained on the Bible slice through fairseq-train, exported with the
script, then compared with the original on real test sentences (teacher-forced
log-probabilities) and through fairseq-generate, the export loaded *without* --user-dir (in
a fresh process of plain fairseq for one case, FRESH_PROCESS_CASE).
"""

import math
import re
import subprocess
import sys

import pytest
import torch

from admin_fairseq.export import max_logprob_difference

import shared_runs
from conftest import REPO, USER_DIR, generate_in_process, run_cli, run_module, train_in_process

CASES = {
    # name: (flags, untied by the export: the fold into the embeddings adds parameters)
    # a shared model (tests/shared_runs.py) or the flags of a model of this file's own
    "vector, layernorm-embedding": ("small vector omega", False),
    "scalar, layernorm-embedding": (
        ["--admin-init", "--admin-output-change-scale", "O(1)", "--layernorm-embedding",
         "--share-all-embeddings"], False),
    "vector, learned positions, untied embeddings": (
        ["--admin-init", "--admin-as-parameter", "--encoder-learned-pos", "--decoder-learned-pos"], False),
    "deepnet, layernorm-embedding": ("small deepnet", False),
    "profiled vector, layernorm-embedding": ("small profiled omega", False),
    "vector, decoder input tied to output": (
        ["--admin-init", "--admin-as-parameter", "--share-decoder-input-output-embed"], True),
    # the recipes' and the main job's models (shared embeddings, sinusoidal positions): the
    # checkpoints the deployment tests convert, trained once for both (tests/shared_runs.py)
    "vector, shared embeddings, sinusoidal": ("vector omega", True),
    "scalar, shared embeddings, sinusoidal": ("scalar omega", True),
    "deepnet, shared embeddings, sinusoidal": ("deepnet", True),
}  # fmt: skip


#: Barely trained models repeat themselves up to the length limit (200 tokens by default):
#: 40 tokens per line compare the two decoders as well at a fifth of the cost. The
#: teacher-forced check above the generation covers every token of the test set.
LENGTH = ["--max-len-a", "0", "--max-len-b", "40"]


def _train(bible, save_dir, flags):
    return shared_runs.train(bible, save_dir, [*shared_runs.SMALL_SHAPE, *flags, *shared_runs.SMALL_TRAIN])


def _export(src, dst, cwd, check=True, in_process=True):
    """scripts/export_transformer.py: its ``main`` in this process (one fairseq start for all
    the cases), or the script as a user runs it (``in_process=False``)."""
    argv = ["--input", str(src), "--output", str(dst), "--subset", "test"]
    if in_process:
        if str(REPO / "scripts") not in sys.path:
            sys.path.insert(0, str(REPO / "scripts"))
        result = run_module("export_transformer", *argv, cwd=cwd)
    else:
        cmd = [sys.executable, str(REPO / "scripts" / "export_transformer.py"), *argv]
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


#: The case whose export fairseq-generate also decodes in a fresh process without the
#: plugin, as a user of plain fairseq would; the other cases decode both models in this
#: process (one fairseq start for all), where the plugin is loaded for the Admin model.
FRESH_PROCESS_CASE = "vector, shared embeddings, sinusoidal"


def _hypotheses(bible, path, cwd, plugin, fresh_process=False):
    extra = ["--user-dir", USER_DIR] if plugin else []
    args = [bible["bin"], *extra, "--path", path, "--gen-subset", "test", "--beam", "4", "--batch-size", "32",
            "--required-batch-size-multiple", "1", *LENGTH]  # fmt: skip
    if fresh_process:
        output = run_cli("fairseq-generate", *args, cwd=cwd).stdout
    else:
        output = generate_in_process(*args, cwd=cwd)
    hyps = {i: (float(score), text) for i, score, text in
            re.findall(r"^H-(\d+)\t(\S+)\t(.*)$", output, flags=re.M)}  # fmt: skip
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
def test_export_matches_the_admin_model(bible, trained, tmp_path, case):
    flags, untied = CASES[case]
    if isinstance(flags, str):  # a shared model
        ckpt, flags = trained(flags), shared_runs.MODELS[flags]
    else:
        ckpt = _train(bible, tmp_path / "ckpt", flags)
    plain = tmp_path / "plain.pt"
    result = _export(ckpt, plain, tmp_path)
    assert "no --user-dir needed" in result.stdout
    assert ("parameters (" in result.stdout) is untied
    # the export holds no plugin classes: torch's weights_only load takes it as it is
    state = torch.load(plain, map_location="cpu", weights_only=True)
    assert state["cfg"]["model"]["arch"] == "transformer"
    assert not any(k.endswith("_residual.omega") for k in state["model"])

    if untied:  # what the fold did to the model's settings is in the export and in the report
        model = state["cfg"]["model"]
        assert not model["share_all_embeddings"] and not model["share_decoder_input_output_embed"]
        if "--deepnet" in flags or "--admin-init" in flags:
            assert "changed: share_" in result.stdout
        if "--encoder-learned-pos" not in flags:
            assert model["encoder_learned_pos"] and model["decoder_learned_pos"]
            assert "decoder_learned_pos: False -> True" in result.stdout

    diff, described = max_logprob_difference(ckpt, plain, subset="test", max_sentences=100)
    assert "sentences of 'test'" in described
    assert diff < 1e-5, diff
    reported = float(re.search(r"= (\S+) over", result.stdout).group(1))
    assert reported < 1e-5

    # plain fairseq-generate (no plugin) translates as the Admin model does; these barely
    # trained models write repetitive output up to the length limit, where beam search meets
    # near-ties now and then
    assert_same_translations(
        ckpt, plain,
        _hypotheses(bible, ckpt, tmp_path, plugin=True),
        _hypotheses(bible, plain, tmp_path, plugin=False, fresh_process=case == FRESH_PROCESS_CASE),
    )  # fmt: skip


def test_untying_adds_what_the_report_says():
    """The fold into the embeddings on a state dict shaped as fairseq saves a model with
    --share-all-embeddings and sinusoidal positions: the trained matrix stays the output
    projection, each stack gets its own scaled copy, the sinusoids become a scaled table."""
    from argparse import Namespace

    from fairseq.modules import SinusoidalPositionalEmbedding

    from admin_fairseq.export import fold_omegas

    vocab, dim = 11, 4
    args = Namespace(encoder_layers=1, decoder_layers=1, share_all_embeddings=True,
                     share_decoder_input_output_embed=True, max_source_positions=6,
                     max_target_positions=5)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    embed = torch.randn(vocab, dim, generator=gen)
    sd = {f"{side}.embed_tokens.weight": embed for side in ("encoder", "decoder")}
    sd["decoder.output_projection.weight"] = embed
    sd["encoder.embed_positions._float_tensor"] = torch.zeros(1)
    sd["decoder.embed_positions._float_tensor"] = torch.zeros(1)
    omegas = {}
    for side, names in (("encoder", ["self_attn", "ffn"]), ("decoder", ["self_attn", "encoder_attn", "ffn"])):
        for name in names:
            omegas[f"{side}.{name}"] = torch.rand(dim, generator=gen) + 1
            sd[f"{side}.layers.0.{name}_residual.omega"] = omegas[f"{side}.{name}"]
            sd[f"{side}.layers.0.{name}_layer_norm.weight"] = torch.ones(dim)
            sd[f"{side}.layers.0.{name}_layer_norm.bias"] = torch.zeros(dim)
        for proj in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "encoder_attn.q_proj", "fc1"):
            sd[f"{side}.layers.0.{proj}.weight"] = torch.ones(3, dim)
    new, new_args, steps, changes, added = fold_omegas(sd, args)
    assert args.share_all_embeddings  # the caller's settings are not modified
    assert not new_args.share_all_embeddings and not new_args.share_decoder_input_output_embed
    assert new_args.encoder_learned_pos and new_args.decoder_learned_pos
    assert torch.equal(new["decoder.output_projection.weight"], embed)
    for side, rows in (("encoder", 6 + 1 + 1), ("decoder", 5 + 1 + 1)):
        omega = omegas[f"{side}.self_attn"]
        assert torch.allclose(new[f"{side}.embed_tokens.weight"], embed * omega)
        table = SinusoidalPositionalEmbedding.get_embedding(rows, dim, 1)
        assert torch.allclose(new[f"{side}.embed_positions.weight"], table * omega)
        assert f"{side}.embed_positions._float_tensor" not in new
        assert torch.allclose(new[f"{side}.layers.0.self_attn.q_proj.weight"], 1 / omega.expand(3, dim))
    assert added == 2 * vocab * dim + (6 + 2) * dim + (5 + 2) * dim  # two matrices, two tables
    assert "share_all_embeddings: True -> False" in changes
    assert not any(k.endswith("_residual.omega") for k in new)


def test_refuses_a_first_sublayer_it_cannot_fold():
    from argparse import Namespace

    from admin_fairseq.export import ExportError, fold_omegas

    args = Namespace(encoder_layers=1, decoder_layers=1, decoder_embed_dim=4, decoder_input_dim=8)
    sd = {f"decoder.layers.0.{n}_residual.omega": torch.ones(4) for n in ("self_attn", "encoder_attn", "ffn")}
    sd.update({f"encoder.layers.0.{n}_residual.omega": torch.ones(4) for n in ("self_attn", "ffn")})
    sd.update({f"encoder.layers.0.self_attn_layer_norm.{w}": torch.ones(4) for w in ("weight", "bias")})
    sd.update({"encoder.embed_tokens.weight": torch.ones(5, 4), "encoder.layers.0.self_attn.q_proj.weight":
               torch.ones(4, 4), "encoder.layers.0.self_attn.k_proj.weight": torch.ones(4, 4),
               "encoder.layers.0.self_attn.v_proj.weight": torch.ones(4, 4),
               "encoder.layers.0.fc1.weight": torch.ones(4, 4)})  # fmt: skip
    args.encoder_learned_pos = True
    args.no_token_positional_embeddings = True
    with pytest.raises(ExportError, match=r"first decoder sub-layer .*\(--decoder-input-dim\)"):
        fold_omegas(sd, args)


@pytest.mark.slow
def test_refuses_a_checkpoint_that_is_not_admin(bible, tmp_path):
    save_dir = tmp_path / "ckpt"
    train_in_process(bible["bin"], "--arch", "transformer_tiny", *shared_runs.SMALL_TRAIN,
                     "--max-update", "2", "--save-dir", save_dir, cwd=tmp_path)  # fmt: skip
    plain = tmp_path / "plain.pt"
    result = _export(save_dir / "checkpoint_last.pt", plain, tmp_path, check=False, in_process=False)
    assert result.returncode == 2
    assert "'transformer_tiny' model, not transformer_admin" in result.stderr
    assert not plain.exists()
