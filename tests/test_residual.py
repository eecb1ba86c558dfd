"""The residual module omega * x + f(x) and the admin-torch-compatible helpers."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import admin_fairseq.core as admin
from admin_fairseq.core import OmegaResidual, as_buffer, as_module, as_parameter, calculate_init

from conftest import REPO


def _inputs(dtype=torch.float32, dim=8):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, dim, generator=gen).to(dtype)
    f_x = torch.randn(4, 3, dim, generator=gen).to(dtype)
    return x, f_x


def test_scalar_buffer_form():
    res = as_module(12)
    assert isinstance(res, OmegaResidual) and not res.as_parameter
    assert res.omega.shape == (1,)
    assert res.omega.item() == pytest.approx(calculate_init(12))
    assert list(res.parameters()) == []
    assert "omega" in dict(res.named_buffers())
    x, f_x = _inputs()
    torch.testing.assert_close(res(x, f_x), x * calculate_init(12) + f_x)


def test_vector_parameter_form_trains():
    res = as_module(18, "O(1)", as_parameter=True, embed_dim=8)
    assert res.as_parameter and res.omega.shape == (8,) and res.omega.requires_grad
    assert torch.all(res.omega == torch.tensor(calculate_init(18, "O(1)")))
    x, f_x = _inputs()
    res(x, f_x).sum().backward()
    torch.testing.assert_close(res.omega.grad, x.sum(dim=(0, 1)))


def test_skip_branch_is_scaled_not_the_branch_output():
    """forward(x, f_x) scales x (the skip); swapping the arguments is a known mistake."""
    res = OmegaResidual(3.0)
    x, f_x = torch.ones(2, 2), torch.full((2, 2), 10.0)
    assert torch.all(res(x, f_x) == 13.0)
    assert torch.all(res(f_x, x) == 31.0)


def test_o_n_is_the_plain_residual_exactly():
    res = as_module(50, "O(n)")
    x, f_x = _inputs()
    assert torch.equal(res(x, f_x), x + f_x)


@pytest.mark.parametrize("as_param", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_omega_follows_module_dtype(as_param, dtype):
    res = as_module(12, as_parameter=as_param, embed_dim=8)
    res = res.half() if dtype is torch.float16 else res.to(dtype)
    assert res.omega.dtype == dtype
    x, f_x = _inputs(dtype)
    out = res(x, f_x)
    assert out.dtype == dtype


@pytest.mark.parametrize("as_param", [False, True])
def test_fp32_omega_does_not_promote_low_precision_activations(as_param):
    """Under autocast the module stays fp32 while activations are bf16/fp16: the residual
    stream must stay in the activation dtype."""
    res = as_module(12, as_parameter=as_param, embed_dim=8)
    x, f_x = _inputs(torch.bfloat16)
    out = res(x, f_x)
    assert out.dtype == torch.bfloat16
    expected = (x.float() * res.omega.detach().to(torch.bfloat16).float() + f_x.float())
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("as_param", [False, True])
def test_state_dict_round_trip(as_param):
    src = as_module(12, as_parameter=as_param, embed_dim=8)
    with torch.no_grad():
        src.omega.copy_(torch.linspace(1.0, 2.0, src.omega.numel()))
    dst = as_module(300, "O(1)", as_parameter=as_param, embed_dim=8)
    dst.load_state_dict(src.state_dict())
    assert list(src.state_dict()) == ["omega"]
    assert torch.equal(dst.omega, src.omega)


def test_vector_without_embed_dim_is_an_error():
    with pytest.raises(ValueError, match="embed_dim is required"):
        as_module(12, as_parameter=True)
    with pytest.raises(ValueError, match="embed_dim must be an integer >= 1"):
        as_module(12, as_parameter=True, embed_dim=0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "2"])
def test_bad_init_value(bad):
    with pytest.raises(ValueError, match="init_value must be"):
        OmegaResidual(bad)


def test_bad_layers_and_scale_propagate():
    with pytest.raises(ValueError, match="num_res_layers"):
        as_module(0)
    with pytest.raises(ValueError, match="O\\(logn\\), O\\(1\\), O\\(n\\)"):
        as_module(12, "O(sqrt n)")


def test_as_buffer_and_as_parameter_register_on_a_network():
    """admin-torch's signatures: as_buffer(network, buffer_name, num_res_layers,
    output_change_scale) and as_parameter(network, parameter_name, num_res_layers,
    embed_dim, output_change_scale)."""
    net = nn.Module()
    as_buffer(net, "attn_omega", 12, "O(1)")
    as_parameter(net, "ffn_omega", 12, 8, "O(logn)")
    assert net.attn_omega.shape == (1,) and not net.attn_omega.requires_grad
    assert net.attn_omega.item() == pytest.approx(12**0.5)
    assert dict(net.named_parameters())["ffn_omega"].shape == (8,)
    assert set(net.state_dict()) == {"attn_omega", "ffn_omega"}
    # keyword call as written in admin-torch's documentation
    as_buffer(network=net, buffer_name="b2", num_res_layers=6, output_change_scale="default")
    assert net.b2.item() == pytest.approx(calculate_init(6))


def test_public_api_matches_admin_torch_names():
    for name in ("OmegaResidual", "calculate_init", "as_module", "as_buffer", "as_parameter"):
        assert hasattr(admin, name)


def test_core_imports_without_fairseq():
    """The core must not import fairseq; here fairseq is made unimportable."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["fairseq"] = None  # any 'import fairseq' now raises ImportError
        import admin_fairseq
        from admin_fairseq.core import as_module
        import torch
        res = as_module(12)
        assert res(torch.ones(2), torch.zeros(2)).tolist() == [res.omega.item()] * 2
        loaded = [m for m in sys.modules if m.startswith("fairseq") and sys.modules[m]]
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_importing_the_package_loads_no_fairseq_and_changes_nothing():
    """With fairseq installed, ``import admin_fairseq`` and its core import no fairseq module
    and leave torch's pickle allowlist as it was; under an unsupported fairseq version they
    still import, and only loading the plugin refuses, naming the version."""
    code = textwrap.dedent(
        """
        import sys, types
        import torch
        allowed = list(torch.serialization.get_safe_globals())
        import admin_fairseq, admin_fairseq.core
        from admin_fairseq.core import as_module, as_parameter, OmegaResidual
        assert not [m for m in sys.modules if m == "fairseq" or m.startswith("fairseq.")]
        assert list(torch.serialization.get_safe_globals()) == allowed
        old = types.ModuleType("fairseq")
        old.__version__ = "0.10.2"
        sys.modules["fairseq"] = old
        from admin_fairseq import plugin
        try:
            plugin.load()
        except admin_fairseq.UnsupportedFairseq as err:
            assert "found fairseq 0.10.2" in str(err), err
        else:
            raise AssertionError("fairseq 0.10.2 was accepted")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
