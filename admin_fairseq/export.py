"""Export a trained Admin model as a plain fairseq ``transformer`` checkpoint.

Every Admin sub-layer computes ``LN(omega * x + f(x))``, where ``x`` is the output of the
previous normalisation (a LayerNorm, or the embeddings for the first sub-layer of a stack).
Two exact rewrites remove omega, for a scalar and for a per-dimension omega alike:

* **Through the preceding LayerNorm:** multiply that LayerNorm's weight and bias by omega,
  so that it outputs ``omega * x``, which is then the plain skip branch; divide the input
  columns of the branch's first linear layers by omega (q/k/v for self-attention, q only
  for cross-attention, fc1 for the FFN), so that ``f`` sees ``x`` as before. The preceding
  LayerNorm's output feeds nothing else, so nothing else changes.
* **Into the embeddings,** for the first sub-layer of a stack when there is no
  ``--layernorm-embedding``: the stack's input is ``embed_scale * E[token] + P[position]``,
  so scaling ``E`` and ``P`` by omega (``embed_scale`` unchanged) makes it ``omega * x``;
  the branch's first linear layers are divided as above. Where ``E`` is shared (with the
  other stack or with the decoder's output projection) the export unties it: the stack
  gets its own scaled copy and the output projection keeps the trained matrix. Sinusoidal
  positions are not parameters, so the export writes them as a learned table of
  ``max_positions`` rows (fairseq's own sinusoid values, scaled). The result is still a
  plain ``transformer``, somewhat larger; the report gives the parameters added.

A decoder that projects its input embeddings (``--decoder-input-dim``) or adaptive input
embeddings have no such fold; the export refuses them and says why.
"""

import copy
from pathlib import Path
from dataclasses import dataclass, field

import torch

from admin_fairseq import atomic, outputs
from admin_fairseq.errors import UserError

ADMIN_KEY_SUFFIX = "_residual.omega"


class ExportError(UserError, ValueError):
    """The checkpoint cannot be rewritten as a plain transformer; the message says why."""


@dataclass
class ExportReport:
    output: str
    steps: list = field(default_factory=list)  # one line per sub-layer fold
    changes: list = field(default_factory=list)  # model settings the folds changed
    added_parameters: int = 0  # untied embedding copies and position tables
    max_abs_diff: float = None  # of the decoder's log-probabilities on a sample batch


def _sublayers(args, side):
    """[(layer, name, input projections, preceding LayerNorm key or None)] for a stack, in
    order. The LayerNorm key is None for the first sub-layer when there is no
    layernorm_embedding (its input is the embeddings)."""
    layers = getattr(args, f"{side}_layers")
    has_cross = side == "decoder" and not getattr(args, "no_cross_attention", False)
    emb_ln = f"{side}.layernorm_embedding" if getattr(args, "layernorm_embedding", False) else None
    out, previous = [], emb_ln
    for i in range(layers):
        p = f"{side}.layers.{i}"
        attn = [f"{p}.self_attn.{x}_proj" for x in "qkv"]
        out.append((i, "self_attn", attn, previous))
        previous = f"{p}.self_attn_layer_norm"
        if has_cross:
            out.append((i, "encoder_attn", [f"{p}.encoder_attn.q_proj"], previous))
            previous = f"{p}.encoder_attn_layer_norm"
        out.append((i, "ffn", [f"{p}.fc1"], previous))
        previous = f"{p}.final_layer_norm"
    return out


def _embedding_blocker(args, side):
    """Why omega cannot be folded into this stack's embeddings, or None if it can."""
    if side == "decoder" and getattr(args, "decoder_input_dim", None) not in (
        None, getattr(args, "decoder_embed_dim", None),
    ):  # fmt: skip
        return "the decoder projects its input embeddings (--decoder-input-dim)"
    if getattr(args, "adaptive_input", False):
        return "it uses adaptive input embeddings (--adaptive-input)"
    return None


def _positions_as_table(args, side, dim):
    """fairseq's sinusoidal position embeddings of ``side``, as the weight of the learned
    table that ``--{side}-learned-pos`` builds (``max_positions + padding_idx + 1`` rows,
    the padding row zero). The token dictionary's padding index is fairseq's default."""
    from fairseq.data import Dictionary
    from fairseq.modules import SinusoidalPositionalEmbedding

    padding_idx = Dictionary().pad()
    max_positions = getattr(args, "max_source_positions" if side == "encoder" else "max_target_positions")
    return SinusoidalPositionalEmbedding.get_embedding(max_positions + padding_idx + 1, dim, padding_idx)


def _fold_into_embeddings(sd, args, side, omega, changes):
    """Scale ``side``'s token and position embeddings by omega, untying and tabulating
    where needed; record the setting changes; return the number of parameters added."""
    blocker = _embedding_blocker(args, side)
    if blocker is not None:
        raise ExportError(
            f"cannot fold the omega of the first {side} sub-layer into the {side} embeddings: "
            f"{blocker}. Train with --layernorm-embedding, whose LayerNorm takes the fold."
        )  # fmt: skip
    added = 0
    tokens = f"{side}.embed_tokens.weight"
    trained = sd[tokens]
    if side == "decoder" and (args.share_decoder_input_output_embed or args.share_all_embeddings):
        sd["decoder.output_projection.weight"] = trained.clone()  # keeps the trained matrix
        if args.share_decoder_input_output_embed:
            args.share_decoder_input_output_embed = False
            changes.append("share_decoder_input_output_embed: True -> False")
        added += trained.numel()
    if args.share_all_embeddings:
        args.share_all_embeddings = False
        changes.append("share_all_embeddings: True -> False")
        added += trained.numel()  # the encoder and the decoder now have one matrix each
    sd[tokens] = trained * omega
    if getattr(args, "no_token_positional_embeddings", False):
        return added
    positions = f"{side}.embed_positions.weight"
    if not getattr(args, f"{side}_learned_pos", False):
        sd.pop(f"{side}.embed_positions._float_tensor", None)
        sd[positions] = _positions_as_table(args, side, trained.shape[1])
        setattr(args, f"{side}_learned_pos", True)
        changes.append(f"{side}_learned_pos: False -> True (the sinusoids as a table)")
        added += sd[positions].numel()
    sd[positions] = sd[positions] * omega
    return added


def fold_omegas(state_dict, args):
    """Return ``(new_state_dict, new_args, steps, changes, added)``: the weights and model
    settings of a plain transformer computing the same function, without any
    ``*_residual.omega`` entry. ``args`` itself is not modified."""
    # the profiled-Admin flag buffer has no meaning (and no place) in a plain transformer
    sd = {k: v.clone() for k, v in state_dict.items() if k != "admin_omega_profiled"}
    args = copy.deepcopy(args)
    for flag in ("share_all_embeddings", "share_decoder_input_output_embed"):
        setattr(args, flag, bool(getattr(args, flag, False)))
    steps, changes, added = [], [], 0
    for side in ("encoder", "decoder"):
        for i, name, inputs, norm in _sublayers(args, side):
            key = f"{side}.layers.{i}.{name}_residual.omega"
            if key not in sd:
                raise ExportError(f"{key} is missing from the checkpoint; is it an Admin model?")
            omega = sd.pop(key).float()
            where = f"{side} layer {i} {name}"
            if norm is not None:
                sd[f"{norm}.weight"] = sd[f"{norm}.weight"] * omega
                sd[f"{norm}.bias"] = sd[f"{norm}.bias"] * omega
                target = norm
            else:
                added += _fold_into_embeddings(sd, args, side, omega, changes)
                target = f"the {side} embeddings"
            for linear in inputs:
                sd[f"{linear}.weight"] = sd[f"{linear}.weight"] / omega
            steps.append(f"{where}: omega folded into {target} and {', '.join(inputs)}")
    leftover = [k for k in sd if k.endswith(ADMIN_KEY_SUFFIX)]
    if leftover:
        raise ExportError(f"unexpected omega entries left after folding: {leftover[:4]}")
    return sd, args, steps, changes, added


def plain_model_args(args):
    """The model configuration of the exported checkpoint: fairseq's ``transformer`` with
    every dimension explicit, as a plain dict (loadable with torch's weights_only)."""
    plain = {k: v for k, v in vars(args).items()
             if not k.startswith("admin_") and k not in ("deepnet", "bf16_autocast")}  # fmt: skip
    plain["arch"] = plain["_name"] = "transformer"
    plain.pop("user_dir", None)
    return plain


def load_fairseq(path):
    """fairseq's own loading of ``path`` (a dict with its settings upgraded), guarded."""
    from admin_fairseq import plugin

    plugin.load()  # includes guard_fairseq_loader
    from fairseq import checkpoint_utils

    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def is_export(path):
    """Whether ``path`` is a checkpoint this export wrote (its ``extra_state`` says so)."""
    from admin_fairseq.checkpoints import CheckpointError, read

    try:
        state = read(path, mmap=True)
    except CheckpointError:
        return False
    return isinstance(state, dict) and "exported_from" in (state.get("extra_state") or {})


def check_output(input_path, output_path):
    """Refuse an output that is the input, a folder, or a file the export did not write."""
    outputs.refuse_overlap([("output", output_path)], [("input checkpoint", input_path)])
    out = Path(output_path)
    if out.is_dir():
        raise ExportError(f"output {out} is a folder; give the name of the checkpoint file to write")
    if out.exists() and not is_export(out):
        raise ExportError(f"output {out} exists and was not written by the export; choose another "
                          "name (the export replaces only its own earlier output)")  # fmt: skip


def export_checkpoint(input_path, output_path):
    """Rewrite an Admin checkpoint as a plain ``transformer`` one. Writes nothing and raises
    :class:`ExportError` when the model cannot be folded."""
    check_output(input_path, output_path)
    state = load_fairseq(input_path)
    cfg = state.get("cfg")
    if cfg is None or cfg.get("model") is None:
        raise ExportError(f"{input_path} has no model configuration (cfg.model)")
    args = cfg["model"]
    if not str(getattr(args, "arch", "")).startswith("transformer_admin"):
        raise ExportError(
            f"{input_path} holds a {getattr(args, 'arch', '?')!r} model, not transformer_admin"
        )
    pre_ln = getattr(args, "encoder_normalize_before", False) or getattr(args, "decoder_normalize_before", False)
    changes, added = [], 0
    if pre_ln:
        model_sd, steps = dict(state["model"]), ["Pre-LN has no omega: weights copied"]
    elif getattr(args, "admin_init", False) or getattr(args, "deepnet", False):
        model_sd, args, steps, changes, added = fold_omegas(state["model"], args)
    else:
        model_sd, steps = dict(state["model"]), ["Admin was off: weights copied"]
    out_cfg = {k: v for k, v in _to_container(cfg).items() if k != "model"}
    out_cfg["model"] = plain_model_args(args)
    if isinstance(out_cfg.get("common"), dict):
        out_cfg["common"]["user_dir"] = None
    exported = {
        "args": None,
        "cfg": out_cfg,
        "model": model_sd,
        "optimizer_history": copy.deepcopy(state.get("optimizer_history", [])),
        "extra_state": {"exported_from": str(input_path)},
    }
    atomic.torch_save(exported, output_path)
    return ExportReport(output=str(output_path), steps=steps, changes=changes, added_parameters=added)


def _to_container(cfg):
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return dict(cfg)


def _load(path, data):
    from admin_fairseq import plugin

    plugin.load()  # an Admin checkpoint needs transformer_admin registered
    from fairseq import checkpoint_utils

    overrides = {"data": str(data)} if data is not None else None
    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(path)], arg_overrides=overrides
    )
    return models[0].eval(), task


def _sample_batch(task, subset, max_sentences, seed=0):
    """A batch of real sentences from ``subset`` of the binarised data if it is there,
    else random tokens from the dictionary."""
    try:
        task.load_dataset(subset)
        dataset = task.dataset(subset)
    except (FileNotFoundError, OSError, KeyError):
        dataset = None
    if dataset is not None and len(dataset) > 0:
        samples = [dataset[i] for i in range(min(max_sentences, len(dataset)))]
        return dataset.collater(samples)["net_input"], f"{len(samples)} sentences of '{subset}'"
    gen = torch.Generator().manual_seed(seed)
    vocab = len(task.source_dictionary)
    first = task.source_dictionary.nspecial
    src = torch.randint(first, vocab, (max_sentences, 20), generator=gen)
    prev = torch.randint(first, vocab, (max_sentences, 15), generator=gen)
    prev[:, 0] = task.target_dictionary.eos()
    lengths = torch.full((max_sentences,), 20, dtype=torch.long)
    net_input = {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev}
    return net_input, f"{max_sentences} random token sequences (no '{subset}' data found)"


@torch.no_grad()
def max_logprob_difference(admin_path, plain_path, data=None, subset="valid", max_sentences=32):
    """Max absolute difference of the decoder's output log-probabilities between the Admin
    checkpoint and its export, on one batch (teacher forcing). Returns ``(diff, batch)``."""
    admin, task = _load(admin_path, data)
    plain, _ = _load(plain_path, data)
    net_input, described = _sample_batch(task, subset, max_sentences)
    outputs = []
    for model in (admin, plain):
        logits = model(**net_input)
        outputs.append(model.get_normalized_probs(logits, log_probs=True).float())
    return (outputs[0] - outputs[1]).abs().max().item(), described
