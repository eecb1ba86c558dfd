"""Baselines behind flags of transformer_admin: DeepNet, the original (profiled) Admin."""

import json
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from admin_fairseq.core.deepnorm import encoder_decoder_constants, single_stack_constants
from admin_fairseq.models.transformer_admin import _projection_weights

from conftest import free_port
from fairseq_helpers import SMALL, build, sample_batch

TINY = ["--arch", "transformer_admin_tiny", *SMALL]


# ----------------------------------------------------------------------------- DeepNet


@pytest.mark.parametrize("n,m", [(6, 6), (18, 18), (60, 12), (100, 100), (1, 1), (12, 3)])
def test_deepnorm_constants(n, m):
    enc, dec = encoder_decoder_constants(n, m)
    # the formulas of the DeepNet paper, evaluated another way (through logarithms)
    assert enc.alpha == pytest.approx(0.81 * math.exp((4 * math.log(n) + math.log(m)) / 16))
    assert enc.beta == pytest.approx(0.87 * math.exp(-(4 * math.log(n) + math.log(m)) / 16))
    assert dec.alpha == pytest.approx(math.exp(math.log(3 * m) / 4))
    assert dec.beta == pytest.approx(math.exp(-math.log(12 * m) / 4))


def test_deepnorm_known_values_and_errors():
    enc, dec = encoder_decoder_constants(6, 6)
    assert (round(enc.alpha, 4), round(enc.beta, 4)) == (1.4179, 0.4970)
    assert (round(dec.alpha, 4), round(dec.beta, 4)) == (2.0598, 0.3433)
    single = single_stack_constants(12)
    assert (round(single.alpha, 4), round(single.beta, 4)) == (2.2134, 0.3195)
    with pytest.raises(ValueError, match="decoder_layers must be an integer >= 1"):
        encoder_decoder_constants(6, 0)


def test_deepnet_draws_the_papers_initialisation(dict_dir):
    """v/out/fc1/fc2 weights: Xavier-normal of gain beta; q/k: gain 1; biases, LayerNorms and
    embeddings exactly as fairseq's transformer makes them (same seed)."""
    layers = ["--encoder-layers", "3", "--decoder-layers", "2"]
    wide = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim",
            "512", "--decoder-ffn-embed-dim", "512"]  # fmt: skip
    vanilla, _ = build(dict_dir, *TINY, *layers, *wide)
    deepnet, _ = build(dict_dir, *TINY, *layers, *wide, "--deepnet")
    enc, dec = encoder_decoder_constants(3, 2)
    gains = {"v_proj.weight": "beta", "out_proj.weight": "beta", "fc1.weight": "beta",
             "fc2.weight": "beta", "q_proj.weight": 1.0, "k_proj.weight": 1.0}  # fmt: skip
    theirs = deepnet.state_dict()
    seen = set()
    for name, value in vanilla.state_dict().items():
        suffix = ".".join(name.split(".")[-2:])
        if name.split(".")[1] == "layers" and suffix in gains:
            gain = gains[suffix]
            if gain == "beta":
                gain = enc.beta if name.startswith("encoder.") else dec.beta
            fan_out, fan_in = value.shape
            expected = gain * math.sqrt(2.0 / (fan_in + fan_out))
            got = theirs[name].std().item()
            # 16k-64k draws per matrix: the sample std is within 2% of the true one
            assert got == pytest.approx(expected, rel=0.03), (name, got, expected)
            assert abs(theirs[name].mean().item()) < 0.1 * expected, name
            seen.add(suffix)
        elif name.endswith("out_proj.bias"):
            assert torch.all(theirs[name] == 0), name  # fairseq starts it at zero
        elif name.split(".")[1] == "layers" and name.endswith("proj.bias") or name.endswith(("fc1.bias", "fc2.bias")):
            # fairseq's nn.Linear default, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not scaled by beta
            # (the re-drawn weights consume random numbers, so later layers differ bit-wise)
            fan_in = theirs[name.replace(".bias", ".weight")].shape[1]
            bound = 1 / math.sqrt(fan_in)
            assert 0.8 * bound < theirs[name].abs().max().item() <= bound, name
        elif not name.endswith("weight") or "layer_norm" in name or "embed" in name:
            assert torch.equal(theirs[name], value), name  # LayerNorms, embeddings, omegas
    assert seen == set(gains)
    for name, value in theirs.items():
        if name.endswith("_residual.omega"):
            alpha = enc.alpha if name.startswith("encoder.") else dec.alpha
            assert value.shape == (1,) and value.item() == pytest.approx(alpha)
    assert not any(n.endswith("omega") for n, _ in deepnet.named_parameters())  # alpha is fixed


def test_deepnet_init_reaches_each_slice_of_a_fused_projection():
    torch.manual_seed(0)
    fused = torch.nn.Module()
    fused.v_proj = None
    fused.in_proj_weight = torch.nn.Parameter(torch.zeros(3 * 256, 256))
    q, k, v = _projection_weights(fused)
    with torch.no_grad():
        torch.nn.init.xavier_normal_(v, gain=0.25)
    assert torch.all(fused.in_proj_weight[: 2 * 256] == 0.0)  # q and k slices untouched
    assert fused.in_proj_weight[2 * 256 :].std().item() == pytest.approx(0.25 * math.sqrt(2 / 512), rel=0.03)
    assert q.shape == k.shape == v.shape == (256, 256)


@pytest.mark.parametrize("flags,message", [
    (["--deepnet", "--encoder-normalize-before"], "--deepnet is defined for Post-LN"),
    (["--deepnet", "--admin-init"], "--deepnet and --admin-init are two different"),
    (["--admin-profile"], "--admin-profile/--admin-profile-from/--admin-profile-to has no effect without --admin-init"),
    (["--admin-init", "--admin-profile", "--admin-output-change-scale", "O(1)"],
     "--admin-output-change-scale does not apply to --admin-profile"),
    (["--admin-init", "--admin-profile", "--decoder-normalize-before"], "--admin-init is defined for Post-LN"),
])  # fmt: skip
def test_combinations_that_make_no_sense(dict_dir, flags, message):
    with pytest.raises(ValueError, match=message):
        build(dict_dir, *TINY, *flags)


# ----------------------------------------------------------------------------- profiled Admin

PROFILED = [*TINY, "--encoder-layers", "3", "--decoder-layers", "2", "--admin-init", "--admin-profile"]


def _encoder_recursion_by_hand(model, src_tokens):
    """The variance recursion written out over the encoder's modules (dropout 0)."""
    encoder = model.encoder
    x, _ = encoder.forward_embedding(src_tokens)
    x = x.transpose(0, 1)
    omegas, omega = [], 1.0
    for layer in encoder.layers:
        h, _ = layer.self_attn(query=x, key=x, value=x, key_padding_mask=None, need_weights=False)
        omegas.append(omega)
        x, omega = layer.self_attn_layer_norm(omega * x + h), math.sqrt((omega * x).var() + h.var())
        h = layer.fc2(layer.activation_fn(layer.fc1(x)))
        omegas.append(omega)
        x, omega = layer.final_layer_norm(omega * x + h), math.sqrt((omega * x).var() + h.var())
    return omegas


def _omega_values(model, side):
    return [m.omega.detach().clone() for n, m in model.named_modules()
            if n.startswith(side + ".") and n.endswith("_residual")]  # fmt: skip


def test_profiled_omega_follows_the_recursion(dict_dir):
    model, task = build(dict_dir, *PROFILED, "--dropout", "0")
    src, lengths, prev = sample_batch(task)
    assert all(torch.all(v == 1.0) for v in _omega_values(model, "encoder"))  # placeholder
    model.train()
    assert model.admin_omega_profiled.item() == 0
    model(src, lengths, prev)  # the first training forward profiles
    assert model.admin_omega_profiled.item() == 1
    expected = _encoder_recursion_by_hand(model, src)
    got = _omega_values(model, "encoder")
    assert len(got) == 6 and all(v.shape == (16,) for v in got)  # per-dimension vectors
    for value, want in zip(got, expected):
        torch.testing.assert_close(value, torch.full((16,), float(want)), rtol=1e-5, atol=1e-6)
    dec = [v[0].item() for v in _omega_values(model, "decoder")]
    assert len(dec) == 6 and dec[0] == 1.0 and all(b > a for a, b in zip(dec, dec[1:]))
    assert all(p.requires_grad for n, p in model.named_parameters() if n.endswith("omega"))


def test_profiling_uses_dropout_and_happens_once(dict_dir):
    model, task = build(dict_dir, *PROFILED, "--dropout", "0.3")
    batch = sample_batch(task)
    model.eval()
    model(*batch)  # evaluation never profiles
    assert model.admin_omega_profiled.item() == 0
    model.train()
    torch.manual_seed(1)
    model(*batch)
    first = _omega_values(model, "encoder")
    other, _ = build(dict_dir, *PROFILED, "--dropout", "0.3")
    other.train()
    torch.manual_seed(2)  # other dropout masks: other variances
    other(*batch)
    assert not torch.equal(first[-1], _omega_values(other, "encoder")[-1])
    model(*batch)  # a second training forward keeps the profile
    assert all(torch.equal(a, b) for a, b in zip(first, _omega_values(model, "encoder")))


def test_profile_survives_a_checkpoint_round_trip(dict_dir, tmp_path):
    model, task = build(dict_dir, *PROFILED)
    model.train()
    model(*sample_batch(task))
    torch.save({"model": model.state_dict()}, tmp_path / "ckpt.pt")
    reloaded, _ = build(dict_dir, *PROFILED, seed=7)
    reloaded.load_state_dict(torch.load(tmp_path / "ckpt.pt")["model"])
    assert reloaded.admin_omega_profiled.item() == 1
    reloaded.train()
    reloaded(*sample_batch(task, seed=5))  # a resumed run must not profile again
    for side in ("encoder", "decoder"):
        for a, b in zip(_omega_values(model, side), _omega_values(reloaded, side)):
            assert torch.equal(a, b)


def test_profile_from_a_checkpoint_or_json(dict_dir, tmp_path):
    source, task = build(dict_dir, *PROFILED)
    source.train()
    source(*sample_batch(task))
    torch.save({"model": source.state_dict()}, tmp_path / "profile.pt")
    loaded, _ = build(dict_dir, *PROFILED, "--admin-profile-from", str(tmp_path / "profile.pt"))
    assert loaded.admin_omega_profiled.item() == 1
    for a, b in zip(_omega_values(source, "decoder"), _omega_values(loaded, "decoder")):
        assert torch.equal(a, b)
    profile = {"encoder": [1.0, 1.5, 1.8, 2.0, 2.2, 2.4], "decoder": [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]}
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    loaded, _ = build(dict_dir, *PROFILED, "--admin-profile-from", str(tmp_path / "profile.json"))
    assert [v[3].item() for v in _omega_values(loaded, "encoder")] == pytest.approx(profile["encoder"])


def test_profile_from_rejects_mismatches(dict_dir, tmp_path):
    wide, task = build(dict_dir, *PROFILED, "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
                       "--encoder-attention-heads", "2")  # fmt: skip
    torch.save({"model": wide.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="is a vector of size 32, the model's is 16"):
        build(dict_dir, *PROFILED, "--admin-profile-from", str(tmp_path / "wide.pt"))
    (tmp_path / "short.json").write_text(json.dumps({"encoder": [1.0] * 4, "decoder": [1.0] * 6}))
    with pytest.raises(ValueError, match="has 4 encoder omegas, the model has 6 encoder sub-layers"):
        build(dict_dir, *PROFILED, "--admin-profile-from", str(tmp_path / "short.json"))
    torch.save({"model": build(dict_dir, *TINY, "--admin-init")[0].state_dict()}, tmp_path / "shallow.pt")
    with pytest.raises(ValueError, match="no omega for .* sub-layers"):
        build(dict_dir, *TINY, "--encoder-layers", "4", "--decoder-layers", "2", "--admin-init",
              "--admin-profile-from", str(tmp_path / "shallow.pt"))  # fmt: skip
    with pytest.raises(ValueError, match="does not exist"):
        build(dict_dir, *PROFILED, "--admin-profile-from", str(tmp_path / "missing.pt"))


def _profile_on_rank(rank, world_size, port, dict_dir, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model, task = build(dict_dir, *PROFILED)
        model.train()
        torch.manual_seed(100 + rank)  # each worker: its own batch and dropout masks
        model(*sample_batch(task, seed=rank))
        values = torch.cat([v for side in ("encoder", "decoder") for v in _omega_values(model, side)])
        torch.save(values, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_workers_agree_on_the_profile(dict_dir, tmp_path):
    mp.spawn(_profile_on_rank, args=(2, free_port(), str(dict_dir), str(tmp_path)), nprocs=2)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(rank0, rank1)
    # without the broadcast the workers would differ: rank 1's own batch gives other values
    model, task = build(dict_dir, *PROFILED)
    model.train()
    torch.manual_seed(101)
    model(*sample_batch(task, seed=1))
    own = torch.cat([v for side in ("encoder", "decoder") for v in _omega_values(model, side)])
    assert not torch.equal(own, rank1)


def test_a_checkpoint_does_not_need_its_profile_file_later(dict_dir, tmp_path):
    """--admin-profile-from is read once; the saved configuration no longer points at it."""
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from admin_fairseq.models.transformer_admin import AdminTransformerModel
    from fairseq_helpers import parse

    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"encoder": [1.0, 1.4, 1.7, 1.9, 2.1, 2.3],
                                   "decoder": [1.0, 1.3, 1.5, 1.7, 1.9, 2.0]}))  # fmt: skip
    args = parse(dict_dir, *PROFILED, "--admin-profile-from", str(profile))
    task = tasks.setup_task(convert_namespace_to_omegaconf(args).task)
    model = AdminTransformerModel.build_model(args, task)
    assert args.admin_profile_from is None and args.admin_profile_source == str(profile)
    state = model.state_dict()
    profile.unlink()
    again = AdminTransformerModel.build_model(args, task)  # as resume/fairseq-generate would
    again.load_state_dict(state)
    assert again.admin_omega_profiled.item() == 1
    assert again.encoder.layers[2].ffn_residual.omega[0].item() == pytest.approx(2.3)


def test_profiling_refuses_fairseqs_fp16_optimizer(dict_dir):
    """FP16Optimizer keeps an fp32 copy made before the profile; memory-efficient fp16 does not."""
    from fairseq.models import ARCH_CONFIG_REGISTRY

    from admin_fairseq.models.transformer_admin import check_admin_args
    from fairseq_helpers import parse

    for flags, ok in ((["--fp16"], False), (["--bf16"], False),
                      (["--fp16", "--memory-efficient-fp16"], True), (["--fp16", "--amp"], True)):  # fmt: skip
        args = parse(dict_dir, *PROFILED, *flags)
        ARCH_CONFIG_REGISTRY["transformer_admin_tiny"](args)
        if ok:
            check_admin_args(args)
        else:
            with pytest.raises(ValueError, match="--memory-efficient-fp16"):
                check_admin_args(args)
