"""The Admin residual ``omega * x + f(x)`` and admin-torch-compatible helpers.

The names and signatures follow admin-torch, so code written against it switches by
changing the import::

    import admin_fairseq.core as admin_torch

    residual = admin_torch.as_module(num_res_layers=12)
    x = layer_norm(residual(x, f(x)))      # skip branch first, branch output second
"""

import math

import torch
from torch import nn

from admin_fairseq.core.omega import calculate_init


def _check_init_value(init_value):
    if isinstance(init_value, bool) or not isinstance(init_value, (int, float)):
        raise ValueError(f"init_value must be a positive number; got {init_value!r}")
    if not math.isfinite(init_value) or init_value <= 0:
        raise ValueError(f"init_value must be a positive, finite number; got {init_value!r}")
    return float(init_value)


def _check_embed_dim(embed_dim):
    if embed_dim is None:
        raise ValueError(
            "embed_dim is required when omega is a trainable vector (as_parameter=True); "
            "pass the model dimension, e.g. embed_dim=512"
        )
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
        raise ValueError(f"embed_dim must be an integer >= 1; got {embed_dim!r}")
    return embed_dim


def omega_tensor(init_value, as_parameter=False, embed_dim=None):
    """Return omega filled with ``init_value``: a trainable vector of size ``embed_dim``
    when ``as_parameter`` is true, else a one-element tensor meant for a buffer."""
    init_value = _check_init_value(init_value)
    if as_parameter:
        return nn.Parameter(torch.full((_check_embed_dim(embed_dim),), init_value))
    return torch.full((1,), init_value)


class OmegaResidual(nn.Module):
    """Residual connection with a rescaled skip branch: ``forward(x, f_x) = x * omega + f_x``.

    Args:
        init_value: the initial omega (see :func:`calculate_init`).
        as_parameter: if true, omega is a trainable vector of size ``embed_dim``;
            otherwise a non-trainable scalar kept as a buffer (saved in the state dict).
        embed_dim: the size of the last dimension of ``x``; required with ``as_parameter``.

    ``x`` is the skip branch (the sub-layer input) and ``f_x`` the branch output. omega is
    cast to ``x``'s dtype, so the residual stream stays in the activation dtype under mixed
    precision, and it follows the module through ``.half()``/``.to()``.
    """

    def __init__(self, init_value, as_parameter=False, embed_dim=None):
        super().__init__()
        omega = omega_tensor(init_value, as_parameter, embed_dim)
        if as_parameter:
            self.omega = omega
        else:
            self.register_buffer("omega", omega)

    @property
    def as_parameter(self):
        return isinstance(self.omega, nn.Parameter)

    def forward(self, x, f_x):
        omega = self.omega
        if omega.dtype != x.dtype:  # e.g. an fp32 omega under autocast: keep x's dtype
            omega = omega.to(x.dtype)
        # addcmul computes f_x + x * omega in one pass over memory.
        return torch.addcmul(f_x, x, omega)

    def extra_repr(self):
        shape = "vector" if self.as_parameter else "scalar"
        first = self.omega.detach().reshape(-1)[0].item()
        return f"omega={first:.4f} ({shape}, size {self.omega.numel()})"


def as_module(num_res_layers, output_change_scale="default", as_parameter=False, embed_dim=None):
    """Return an :class:`OmegaResidual` initialised for ``num_res_layers`` sub-layers."""
    init_value = calculate_init(num_res_layers, output_change_scale)
    return OmegaResidual(init_value, as_parameter=as_parameter, embed_dim=embed_dim)


def as_buffer(network, buffer_name, num_res_layers, output_change_scale="default"):
    """Register omega on ``network`` as a non-trainable scalar buffer named ``buffer_name``.

    Use it as ``x * network.<buffer_name> + f_x``.
    """
    init_value = calculate_init(num_res_layers, output_change_scale)
    network.register_buffer(buffer_name, omega_tensor(init_value))


def as_parameter(network, parameter_name, num_res_layers, embed_dim, output_change_scale="default"):
    """Register omega on ``network`` as a trainable vector of size ``embed_dim``
    named ``parameter_name``. Use it as ``x * network.<parameter_name> + f_x``."""
    init_value = calculate_init(num_res_layers, output_change_scale)
    network.register_parameter(
        parameter_name, omega_tensor(init_value, as_parameter=True, embed_dim=embed_dim)
    )
