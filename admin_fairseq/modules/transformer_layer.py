"""fairseq Transformer layers whose residual connections are Admin's ``omega * x + f(x)``.

fairseq's layers call ``self.residual_connection(x, residual)`` once per sub-layer, right
before the Post-LN LayerNorm; in the decoder one hook serves all three sub-layers. The layers
below override ``forward`` only to name the sub-layers' omegas in the order the parent's
forward reaches them (self-attention, cross-attention when it runs, FFN), and the hook takes
the next one. Everything else, including activation checkpointing (which re-runs ``forward``),
is fairseq's own code.
"""

import math

import torch
from fairseq.modules.transformer_layer import (
    TransformerDecoderLayerBase,
    TransformerEncoderLayerBase,
)

from admin_fairseq.core.residual import OmegaResidual


class OmegaProfiler:
    """The original Admin's profiling of one stack, run during one forward pass.

    Sub-layer ``i`` gets omega_i, with omega_1 = 1 and
    ``omega_{i+1} = sqrt(Var[omega_i * x_i] + Var[f_i(x_i)])`` (variance over all elements of
    the batch tensor), i.e. omega_i^2 ~ 1 + the summed branch variances below ``i``. Each
    sub-layer's omega is set before it is used, so the recursion sees the rescaled stream.
    """

    def __init__(self):
        self.next_value = 1.0
        self.values = []

    @torch.no_grad()
    def visit(self, residual, skip, branch):
        value = self.next_value
        residual.omega.fill_(value)
        self.values.append(value)
        variance = (skip.float() * value).var() + branch.float().var()
        self.next_value = math.sqrt(variance.item())


class _AdminLayerMixin:
    """The residual hook shared by the encoder and decoder layers: ``forward`` names the
    omegas of this pass in the order the parent's forward reaches its sub-layers, and each
    ``residual_connection`` call takes the next one."""

    omega_profiler = None  # set on every layer of a stack while its omegas are profiled

    def _forward_with_omegas(self, order, parent_forward, *args, **kwargs):
        self._omega_order, self._omega_next = order, 0
        out = parent_forward(*args, **kwargs)
        if self._omega_next != len(order):
            raise RuntimeError(
                f"admin_fairseq: expected {len(order)} residual connections in a fairseq "
                f"Transformer layer, saw {self._omega_next}; this fairseq version is not "
                "supported by admin_fairseq's layers"
            )
        return out

    def residual_connection(self, x, residual):
        # fairseq passes the branch output first and the skip branch second.
        index, order = self._omega_next, self._omega_order
        if index >= len(order):
            raise RuntimeError(
                "admin_fairseq: a fairseq Transformer layer called residual_connection() "
                f"more than the {len(order)} times expected; this fairseq version is not "
                "supported by admin_fairseq's layers"
            )
        self._omega_next = index + 1
        omega_residual = order[index]
        if self.omega_profiler is not None:
            self.omega_profiler.visit(omega_residual, residual, x)
        return omega_residual(residual, x)


class AdminEncoderLayer(_AdminLayerMixin, TransformerEncoderLayerBase):
    """Post-LN encoder layer with ``LN(omega * x + f(x))`` for self-attention and FFN."""

    def __init__(self, cfg, omega_init, as_parameter=False, return_fc=False):
        super().__init__(cfg, return_fc=return_fc)
        dim = cfg.encoder.embed_dim
        self.self_attn_residual = OmegaResidual(omega_init, as_parameter, dim)
        self.ffn_residual = OmegaResidual(omega_init, as_parameter, dim)
        self._omega_order = (self.self_attn_residual, self.ffn_residual)

    def forward(self, x, encoder_padding_mask, attn_mask=None):
        return self._forward_with_omegas(
            self._omega_order, super().forward, x, encoder_padding_mask, attn_mask=attn_mask
        )


class AdminDecoderLayer(_AdminLayerMixin, TransformerDecoderLayerBase):
    """Post-LN decoder layer with its own omega for self-attention, cross-attention and FFN."""

    def __init__(self, cfg, omega_init, as_parameter=False, no_encoder_attn=False):
        super().__init__(cfg, no_encoder_attn=no_encoder_attn)
        dim = cfg.decoder.embed_dim
        self.self_attn_residual = OmegaResidual(omega_init, as_parameter, dim)
        if self.encoder_attn is not None:
            self.encoder_attn_residual = OmegaResidual(omega_init, as_parameter, dim)
        else:
            self.encoder_attn_residual = None
        self.ffn_residual = OmegaResidual(omega_init, as_parameter, dim)
        self._with_cross = (self.self_attn_residual, self.encoder_attn_residual, self.ffn_residual)
        self._without_cross = (self.self_attn_residual, self.ffn_residual)

    def forward(self, x, encoder_out=None, *args, **kwargs):
        # The parent runs cross-attention only when both the module and encoder_out exist.
        uses_cross = self.encoder_attn is not None and encoder_out is not None
        order = self._with_cross if uses_cross else self._without_cross
        return self._forward_with_omegas(order, super().forward, x, encoder_out, *args, **kwargs)
