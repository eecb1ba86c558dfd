"""transformer_admin in memory: equivalence with fairseq's transformer, omega placement,
presets, flag validation."""

import pytest
import torch
from fairseq.models import ARCH_CONFIG_REGISTRY
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase

from admin_fairseq.core import calculate_init
from admin_fairseq.models.transformer_admin import check_admin_args
from admin_fairseq.modules.transformer_layer import AdminDecoderLayer, AdminEncoderLayer

from fairseq_helpers import SMALL, build, forward, parse, sample_batch

DEEP = ["--encoder-layers", "4", "--decoder-layers", "3"]


def _omegas(model, side):
    """{(layer index, sub-layer name): omega tensor} for the encoder or decoder."""
    found = {}
    for name, tensor in model.state_dict().items():
        if name.startswith(side + ".layers.") and name.endswith("_residual.omega"):
            parts = name.split(".")
            found[(int(parts[2]), parts[3])] = tensor
    return found


def test_admin_off_is_fairseq_transformer_bit_for_bit(dict_dir):
    ours, task = build(dict_dir, "--arch", "transformer_admin_tiny", *DEEP)
    theirs, _ = build(dict_dir, "--arch", "transformer_tiny", *DEEP)
    assert type(ours.encoder) is type(theirs.encoder)
    assert type(ours.decoder.layers[0]) is type(theirs.decoder.layers[0])
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(ref)
    for key in ref:
        assert torch.equal(mine[key], ref[key]), key
    batch = sample_batch(task)
    for train in (True, False):  # dropout on (same masks from the same seed) and off
        ours.train(train)
        theirs.train(train)
        assert torch.equal(forward(ours, batch), forward(theirs, batch))


def test_admin_o_n_computes_the_same_function(dict_dir):
    """omega = 1 is vanilla Post-LN: same parameters from the same seed, same outputs."""
    vanilla, task = build(dict_dir, "--arch", "transformer_admin_tiny", *DEEP)
    admin, _ = build(
        dict_dir, "--arch", "transformer_admin_tiny", *DEEP,
        "--admin-init", "--admin-output-change-scale", "O(n)",
    )  # fmt: skip
    assert isinstance(admin.encoder.layers[0], AdminEncoderLayer)
    admin_params = dict(admin.named_parameters())
    for name, param in vanilla.named_parameters():
        assert torch.equal(param, admin_params[name]), name
    batch = sample_batch(task)
    for train in (True, False):
        vanilla.train(train)
        admin.train(train)
        torch.testing.assert_close(forward(admin, batch), forward(vanilla, batch), rtol=0, atol=0)


def test_admin_o_logn_changes_the_function(dict_dir):
    """The check above could fail: with omega != 1 the outputs differ."""
    vanilla, task = build(dict_dir, "--arch", "transformer_admin_tiny", *DEEP)
    admin, _ = build(dict_dir, "--arch", "transformer_admin_tiny", *DEEP, "--admin-init")
    vanilla.eval()
    admin.eval()
    batch = sample_batch(task)
    assert not torch.allclose(forward(admin, batch), forward(vanilla, batch))


@pytest.mark.parametrize("scale", ["O(logn)", "O(1)", "O(n)"])
@pytest.mark.parametrize("as_parameter", [False, True])
def test_omega_per_stack_and_sublayer(dict_dir, scale, as_parameter):
    flags = ["--arch", "transformer_admin_tiny", *SMALL, *DEEP, "--admin-init",
             "--admin-output-change-scale", scale]  # fmt: skip
    if as_parameter:
        flags.append("--admin-as-parameter")
    model, _ = build(dict_dir, *flags)
    enc, dec = _omegas(model, "encoder"), _omegas(model, "decoder")
    # every sub-layer has its own omega: 2 per encoder layer, 3 per decoder layer
    assert set(enc) == {(i, s) for i in range(4) for s in ("self_attn_residual", "ffn_residual")}
    assert set(dec) == {
        (i, s)
        for i in range(3)
        for s in ("self_attn_residual", "encoder_attn_residual", "ffn_residual")
    }
    for omegas, n in ((enc, 2 * 4), (dec, 3 * 3)):  # N counted per stack
        for value in omegas.values():
            assert value.shape == ((16,) if as_parameter else (1,))
            assert torch.all(value == torch.tensor(calculate_init(n, scale)))
    n_trainable = sum(1 for n, _ in model.named_parameters() if n.endswith("residual.omega"))
    assert n_trainable == (4 * 2 + 3 * 3 if as_parameter else 0)


def test_omega_values_match_the_table_on_deep_presets(dict_dir):
    """100L-100L: N = 200 (encoder) and 300 (decoder), never their sum. Width reduced so
    that the model builds quickly on a CPU."""
    model, _ = build(
        dict_dir, "--arch", "transformer_admin_100_100", *SMALL, "--admin-init",
        "--admin-output-change-scale", "O(1)",
    )  # fmt: skip
    assert len(model.encoder.layers) == 100 and len(model.decoder.layers) == 100
    last_enc = model.encoder.layers[99].ffn_residual.omega.item()
    last_dec = model.decoder.layers[99].encoder_attn_residual.omega.item()
    assert last_enc == pytest.approx(200**0.5, abs=1e-5)
    assert last_dec == pytest.approx(17.3205, abs=1e-4)  # published N=300, O(1)


def _encoder_layer_by_hand(layer, x, w_attn, w_ffn):
    h, _ = layer.self_attn(query=x, key=x, value=x, key_padding_mask=None, need_weights=False)
    x = layer.self_attn_layer_norm(w_attn * x + h)
    h = layer.fc2(layer.activation_fn(layer.fc1(x)))
    return layer.final_layer_norm(w_ffn * x + h)


def _decoder_layer_by_hand(layer, x, enc, w_self, w_cross, w_ffn):
    h, _ = layer.self_attn(query=x, key=x, value=x, need_weights=False)
    x = layer.self_attn_layer_norm(w_self * x + h)
    if enc is not None:
        h, _ = layer.encoder_attn(query=x, key=enc, value=enc, static_kv=True, need_weights=False)
        x = layer.encoder_attn_layer_norm(w_cross * x + h)
    h = layer.fc2(layer.activation_fn(layer.fc1(x)))
    return layer.final_layer_norm(w_ffn * x + h)


def test_each_sublayer_uses_its_own_omega(dict_dir):
    """Distinct random omega vectors per sub-layer; the layers must equal a hand-written
    LN(omega * x + f(x)) with the right omega in the right place."""
    model, _ = build(
        dict_dir, "--arch", "transformer_admin_tiny", *SMALL, "--admin-init",
        "--admin-as-parameter",
    )  # fmt: skip
    model.eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("residual.omega"):
                p.copy_(1.0 + 3.0 * torch.rand(p.shape, generator=gen))
    x = torch.randn(5, 2, 16, generator=gen)
    enc_out = torch.randn(6, 2, 16, generator=gen)

    layer = model.encoder.layers[1]
    expected = _encoder_layer_by_hand(
        layer, x, layer.self_attn_residual.omega, layer.ffn_residual.omega
    )
    torch.testing.assert_close(layer(x, None), expected)

    layer = model.decoder.layers[1]
    omegas = (layer.self_attn_residual.omega, layer.encoder_attn_residual.omega,
              layer.ffn_residual.omega)  # fmt: skip
    out, _, _ = layer(x, encoder_out=enc_out, encoder_padding_mask=None)
    torch.testing.assert_close(out, _decoder_layer_by_hand(layer, x, enc_out, *omegas))
    # without encoder output the parent skips cross-attention: the FFN keeps its own omega
    out, _, _ = layer(x, encoder_out=None)
    torch.testing.assert_close(out, _decoder_layer_by_hand(layer, x, None, *omegas))


def test_checkpoint_activations_gives_the_same_forward_and_gradients(dict_dir):
    flags = ["--arch", "transformer_admin_tiny", *SMALL, *DEEP, "--admin-init",
             "--admin-as-parameter", "--dropout", "0"]  # fmt: skip
    plain, task = build(dict_dir, *flags)
    ckpt, _ = build(dict_dir, *flags, "--checkpoint-activations")
    for layer in (*ckpt.encoder.layers, *ckpt.decoder.layers):  # wrapped as fairseq does
        assert hasattr(layer, "precheckpoint_forward")
    batch = sample_batch(task)
    out_plain, out_ckpt = forward(plain, batch), forward(ckpt, batch)
    torch.testing.assert_close(out_ckpt, out_plain)
    out_plain.square().mean().backward()
    out_ckpt.square().mean().backward()
    grads = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        other = grads[name]
        assert other.grad is not None, name
        torch.testing.assert_close(other.grad, p.grad, msg=name)
    omega_grad = plain.decoder.layers[0].encoder_attn_residual.omega.grad
    assert omega_grad is not None and omega_grad.abs().sum() > 0


def test_decoder_without_cross_attention_counts_two_sublayers(dict_dir):
    model, _ = build(
        dict_dir, "--arch", "transformer_admin_tiny", *SMALL, *DEEP, "--admin-init",
        "--no-cross-attention",
    )  # fmt: skip
    layer = model.decoder.layers[0]
    assert isinstance(layer, AdminDecoderLayer) and layer.encoder_attn_residual is None
    assert layer.ffn_residual.omega.item() == pytest.approx(calculate_init(2 * 3))


PRESETS = [
    ("transformer_admin", "transformer"),
    ("transformer_admin_tiny", "transformer_tiny"),
    ("transformer_admin_iwslt_de_en", "transformer_iwslt_de_en"),
    ("transformer_admin_wmt_en_de", "transformer_wmt_en_de"),
    ("transformer_admin_vaswani_wmt_en_de_big", "transformer_vaswani_wmt_en_de_big"),
    ("transformer_admin_vaswani_wmt_en_fr_big", "transformer_vaswani_wmt_en_fr_big"),
]


@pytest.mark.parametrize("ours,theirs", PRESETS)
def test_presets_mirror_fairseq(dict_dir, ours, theirs):
    a, b = parse(dict_dir, "--arch", ours), parse(dict_dir, "--arch", theirs)
    ARCH_CONFIG_REGISTRY[ours](a)
    ARCH_CONFIG_REGISTRY[theirs](b)
    va, vb = vars(a), vars(b)
    shared = set(vb) - {"arch"}
    assert {k: va[k] for k in shared} == {k: vb[k] for k in shared}
    assert a.admin_init is False and a.admin_output_change_scale == "O(logn)"


@pytest.mark.parametrize("arch,enc,dec", [
    ("transformer_admin_18_18", 18, 18),
    ("transformer_admin_60_12", 60, 12),
    ("transformer_admin_100_100", 100, 100),
])  # fmt: skip
def test_deep_presets(dict_dir, arch, enc, dec):
    args = parse(dict_dir, "--arch", arch)
    ARCH_CONFIG_REGISTRY[arch](args)
    assert (args.encoder_layers, args.decoder_layers) == (enc, dec)
    assert (args.encoder_embed_dim, args.encoder_ffn_embed_dim, args.encoder_attention_heads) == (512, 2048, 8)
    # flags still win over the preset
    args = parse(dict_dir, "--arch", arch, "--encoder-layers", "3")
    ARCH_CONFIG_REGISTRY[arch](args)
    assert args.encoder_layers == 3


@pytest.mark.parametrize("flag", ["--encoder-normalize-before", "--decoder-normalize-before"])
def test_admin_with_pre_ln_is_an_error(dict_dir, flag):
    with pytest.raises(ValueError, match=f"Post-LN .*{flag}"):
        build(dict_dir, "--arch", "transformer_admin_tiny", "--admin-init", flag)


def test_pre_ln_and_post_ln_stay_reachable(dict_dir):
    model, _ = build(
        dict_dir, "--arch", "transformer_admin_tiny", "--encoder-normalize-before",
        "--decoder-normalize-before",
    )  # fmt: skip
    assert model.encoder.layers[0].normalize_before
    assert isinstance(model.decoder.layers[0], TransformerDecoderLayerBase)


def test_admin_flags_without_admin_init_are_errors(dict_dir):
    with pytest.raises(ValueError, match="--admin-as-parameter has no effect without --admin-init"):
        build(dict_dir, "--arch", "transformer_admin_tiny", "--admin-as-parameter")
    with pytest.raises(ValueError, match="--admin-output-change-scale has no effect"):
        build(dict_dir, "--arch", "transformer_admin_tiny", "--admin-output-change-scale", "O(1)")


def test_zero_layers_is_an_error(dict_dir):
    with pytest.raises(ValueError, match="--encoder-layers must be >= 1"):
        build(dict_dir, "--arch", "transformer_admin_tiny", "--admin-init", "--encoder-layers", "0")


def test_bad_scale_from_a_config_names_the_flag(dict_dir):
    """argparse rejects a bad --admin-output-change-scale itself; a configuration that
    bypasses argparse (an edited checkpoint, the Python API) gets the same message."""
    args = parse(dict_dir, "--arch", "transformer_admin_tiny", "--admin-init")
    ARCH_CONFIG_REGISTRY["transformer_admin_tiny"](args)
    args.admin_output_change_scale = "O(log n)"
    with pytest.raises(ValueError, match="--admin-output-change-scale must be one of O\\(logn\\)"):
        check_admin_args(args)
    args.admin_output_change_scale = "default"
    check_admin_args(args)  # the alias of O(logn) passes, and stays as given: checks change nothing
    assert args.admin_output_change_scale == "default"


def test_deepest_preset_stays_finite_in_bf16(dict_dir):
    """100L-100L with O(1) omega (14.1 encoder, 17.3 decoder): a bf16 forward and backward
    on the CPU give finite outputs and gradients, omega stays in bf16 with the model."""
    model, task = build(
        dict_dir, "--arch", "transformer_admin_100_100", *SMALL, "--admin-init",
        "--admin-output-change-scale", "O(1)", "--admin-as-parameter",
    )  # fmt: skip
    model = model.to(torch.bfloat16).train()
    assert model.decoder.layers[99].ffn_residual.omega.dtype == torch.bfloat16
    logits = forward(model, sample_batch(task))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    logits.float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 1000 and all(torch.isfinite(g.float()).all() for g in grads)


@pytest.mark.gpu
def test_deepest_preset_stays_finite_in_fp16_on_gpu(dict_dir):
    """The same 100L-100L O(1) model in fp16 on a CUDA GPU (skipped without one)."""
    model, task = build(
        dict_dir, "--arch", "transformer_admin_100_100", *SMALL, "--admin-init",
        "--admin-output-change-scale", "O(1)", "--admin-as-parameter",
    )  # fmt: skip
    model = model.cuda().half().train()
    logits = forward(model, tuple(t.cuda() for t in sample_batch(task)))
    assert logits.dtype == torch.float16 and torch.isfinite(logits.float()).all()
    logits.float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 1000 and all(torch.isfinite(g.float()).all() for g in grads)
