"""``transformer_admin``: fairseq's ``transformer`` with Admin residuals behind ``--admin-init``.

Without ``--admin-init`` (or ``--deepnet``) the model builds fairseq's own encoder and
decoder, so it is exactly fairseq's ``transformer`` (same parameters for the same seed, same
outputs, same state dict); fairseq's ``--encoder-normalize-before``/``--decoder-normalize-
before`` give Pre-LN. The variants, all Post-LN ``LN(omega * x + f(x))``:

* ``--admin-init``: plug-in-and-play Admin, omega from
  :func:`admin_fairseq.core.calculate_init`, counted per stack (encoder ``N = 2L``,
  decoder ``N = 3L``); a scalar buffer, or a trainable vector with ``--admin-as-parameter``.
* ``--admin-init --admin-profile``: the original Admin. omega follows the variance
  recursion of :class:`~admin_fairseq.modules.transformer_layer.OmegaProfiler` on the first
  training batch (dropout on) before the first update, is broadcast from rank 0 so that
  every worker agrees, and is then trained as per-dimension vectors. A flag buffer in the
  model records that it was done, so resuming never profiles again.
  ``--admin-profile-from`` takes the profile of an earlier checkpoint or JSON file instead;
  ``--admin-profile-to FILE`` profiles, writes the omegas to FILE and stops before the first
  update (the original two-step procedure, needed under ``--fp16``'s fp32 master weights).
* ``--deepnet``: DeepNorm, a fixed ``alpha`` on the skip branch and ``beta``-scaled initial
  weights of v_proj, out_proj (cross-attention included), fc1 and fc2.
"""

import json
import logging
import sys

import torch

from fairseq.distributed import fsdp_wrap
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import (
    TransformerConfig,
    TransformerDecoderBase,
    TransformerEncoderBase,
    TransformerModel,
)
from fairseq.models.transformer import transformer_legacy as fairseq_archs
from fairseq.modules.checkpoint_activations import checkpoint_wrapper

from admin_fairseq import atomic, monitor
from admin_fairseq.core.deepnorm import encoder_decoder_constants
from admin_fairseq.core.omega import calculate_init
from admin_fairseq.models import options
from admin_fairseq.models.checks import (  # noqa: F401  (check_admin_args: the model's public check)
    check_admin_args, check_bf16, check_half_precision_device, check_omega_shapes)
from admin_fairseq.models.profile import _omega_residuals, load_omega_profile
from admin_fairseq.modules.transformer_layer import (
    AdminDecoderLayer,
    AdminEncoderLayer,
    OmegaProfiler,
)

logger = logging.getLogger(__name__)


def _residual_plan(cfg, side, sublayers_per_layer):
    """``(initial omega, as_parameter, DeepNorm beta or None)`` for one stack."""
    layers = cfg.encoder.layers if side == "encoder" else cfg.decoder.layers
    if cfg.deepnet:
        constants = encoder_decoder_constants(cfg.encoder.layers, cfg.decoder.layers)
        stack = constants[0] if side == "encoder" else constants[1]
        return stack.alpha, False, stack.beta
    if options.profiled(cfg):  # a placeholder until the first training batch is profiled
        return 1.0, True, None
    omega = calculate_init(sublayers_per_layer * layers, cfg.admin_output_change_scale)
    return omega, cfg.admin_as_parameter, None


def _projection_weights(attn):
    """``(q, k, v)`` weight tensors of an attention module: its own projections (fairseq),
    or the three slices of a fused ``in_proj_weight`` (other implementations)."""
    if getattr(attn, "v_proj", None) is not None:
        return attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
    dim = attn.in_proj_weight.shape[0] // 3
    fused = attn.in_proj_weight
    return fused[:dim], fused[dim : 2 * dim], fused[2 * dim :]


@torch.no_grad()
def apply_deepnorm_init(layer, beta):
    """DeepNet's initialisation (Wang et al., 2022, Algorithm 1): the weights of v_proj,
    out_proj (self- and cross-attention), fc1 and fc2 are drawn from Xavier-normal with gain
    beta, those of q_proj and k_proj from Xavier-normal with gain 1. Biases keep fairseq's
    initialisation (the paper's algorithm sets weights only); docs/published-settings.md
    says why this and not torchscale's "multiply the default weights and biases by beta"."""
    for attn in (layer.self_attn, getattr(layer, "encoder_attn", None)):
        if attn is None:
            continue
        q, k, v = _projection_weights(attn)
        torch.nn.init.xavier_normal_(q, gain=1.0)
        torch.nn.init.xavier_normal_(k, gain=1.0)
        torch.nn.init.xavier_normal_(v, gain=beta)
        torch.nn.init.xavier_normal_(attn.out_proj.weight, gain=beta)
    torch.nn.init.xavier_normal_(layer.fc1.weight, gain=beta)
    torch.nn.init.xavier_normal_(layer.fc2.weight, gain=beta)


def _wrap_like_fairseq(layer, cfg):
    """Apply the activation-checkpointing and FSDP wrapping fairseq gives its own layers."""
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    # fairseq: a checkpointed layer is always FSDP-wrapped, whatever its size
    min_params_to_wrap = cfg.min_params_to_wrap if not checkpoint else 0
    return fsdp_wrap(layer, min_num_params=min_params_to_wrap)


class AdminTransformerEncoder(TransformerEncoderBase):
    """fairseq's encoder built from :class:`AdminEncoderLayer` (N = 2 x layers)."""

    def build_encoder_layer(self, cfg):
        omega, as_parameter, beta = _residual_plan(cfg, "encoder", 2)
        layer = AdminEncoderLayer(cfg, omega, as_parameter=as_parameter, return_fc=self.return_fc)
        if beta is not None:
            apply_deepnorm_init(layer, beta)
        return _wrap_like_fairseq(layer, cfg)


class AdminTransformerDecoder(TransformerDecoderBase):
    """fairseq's decoder built from :class:`AdminDecoderLayer` (N = 3 x layers, or 2 x
    layers without cross-attention)."""

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        omega, as_parameter, beta = _residual_plan(cfg, "decoder", 2 if no_encoder_attn else 3)
        layer = AdminDecoderLayer(
            cfg, omega, as_parameter=as_parameter, no_encoder_attn=no_encoder_attn
        )
        if beta is not None:
            apply_deepnorm_init(layer, beta)
        return _wrap_like_fairseq(layer, cfg)


@register_model("transformer_admin")
class AdminTransformerModel(TransformerModel):
    """fairseq's ``transformer`` with Admin (Liu et al., 2020) behind ``--admin-init``."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        options.add_args(parser)  # each flag declared once, in models/options.py

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        if options.profiled(args):
            # 0 until the omegas are profiled (or loaded); saved with the checkpoint
            self.register_buffer("admin_omega_profiled", torch.zeros(()))
        self.admin_profile_to = getattr(args, "admin_profile_to", None)
        self.bf16_autocast = bool(getattr(args, "bf16_autocast", False))
        self.admin_omega_fp32 = bool(getattr(args, "admin_omega_fp32", False))
        interval = getattr(args, "admin_monitor_interval", 0) or 0
        if interval and "fairseq_cli.train" in sys.modules:  # training only, not generate
            monitor.install()  # fairseq's trainer runs the monitor from here on (once)
            # a plain attribute (not a module): nothing of it goes into the state dict
            self.admin_monitor = monitor.StabilityMonitor(
                self, interval, args.admin_monitor_factor, args.admin_monitor_stop
            )

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)  # fill in flags missing from older checkpoints
        check_admin_args(args)
        check_half_precision_device(args)
        check_bf16(args)
        monitor.check_args(args)
        model = super().build_model(args, task)
        if args.admin_profile_from:
            load_omega_profile(model, args.admin_profile_from)
            model.admin_omega_profiled.fill_(1)
            logger.info(f"Admin omegas loaded from {args.admin_profile_from}")
            # The omegas now live in the model and its checkpoints: a later load (resume,
            # fairseq-generate) must not need the file, so keep its name for the record only.
            args.admin_profile_source = args.admin_profile_from
            args.admin_profile_from = None
        return model

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        if not (cfg.admin_init or cfg.deepnet):
            return super().build_encoder(args, src_dict, embed_tokens)
        return AdminTransformerEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        if not (cfg.admin_init or cfg.deepnet):
            return super().build_decoder(args, tgt_dict, embed_tokens)
        return AdminTransformerDecoder(
            cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention
        )

    def half(self):
        """fairseq's fp16 trainers (and ``--fp16`` in fairseq-generate) call this; with
        ``--admin-omega-fp32`` the trainable omegas stay fp32 (each residual casts its omega
        to the stream's dtype when it computes, so the forward is the fp16 one)."""
        super().half()
        if self.admin_omega_fp32:
            for _, module in _omega_residuals(self):
                if isinstance(module.omega, torch.nn.Parameter):
                    module.omega.data = module.omega.data.float()
        return self

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        if strict:
            check_omega_shapes(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def forward(self, src_tokens, src_lengths, prev_output_tokens, return_all_hiddens: bool = True,
                features_only: bool = False, alignment_layer=None, alignment_heads=None):  # fmt: skip
        if self.training and getattr(self, "admin_omega_profiled", None) is not None:
            if not self.admin_omega_profiled.item():
                self.profile_omegas(src_tokens, src_lengths, prev_output_tokens)
        # --bf16-autocast: training and validation compute in bf16 (the weights stay fp32;
        # the criterion takes the log-softmax in fp32); beam search, which calls the encoder
        # and decoder directly, stays in the weights' precision
        with torch.autocast(src_tokens.device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast):
            return super().forward(src_tokens, src_lengths, prev_output_tokens, return_all_hiddens,
                                   features_only, alignment_layer, alignment_heads)  # fmt: skip

    @torch.no_grad()
    def profile_omegas(self, src_tokens, src_lengths, prev_output_tokens):
        """Run the original Admin's profiling on this batch (in the current train/eval mode),
        make every worker use rank 0's result, and mark the model as profiled."""
        profilers = {}
        for side, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            profilers[side] = OmegaProfiler()
            for layer in stack.layers:
                layer.omega_profiler = profilers[side]
        try:
            super().forward(src_tokens, src_lengths, prev_output_tokens)
        finally:
            for stack in (self.encoder, self.decoder):
                for layer in stack.layers:
                    layer.omega_profiler = None
        for side, stack in (("encoder", self.encoder), ("decoder", self.decoder)):
            expected = len(_omega_residuals(stack))
            if len(profilers[side].values) != expected:
                raise RuntimeError(
                    f"admin_fairseq: profiling saw {len(profilers[side].values)} of the "
                    f"{expected} {side} sub-layers; the layers are wrapped in a way it does "
                    "not support"
                )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size() > 1:
                for _, module in _omega_residuals(self):
                    torch.distributed.broadcast(module.omega.data, src=0)
        self.admin_omega_profiled.fill_(1)
        for side, profiler in profilers.items():
            values = profiler.values
            logger.info(
                f"Admin profiled {len(values)} {side} omegas on rank 0's first batch: "
                f"{values[0]:.3f}, {values[1]:.3f}, ... {values[-1]:.3f}"
            )
        if self.admin_profile_to:
            self.write_profile(self.admin_profile_to)
            logger.info(f"Admin profile written to {self.admin_profile_to}; stopping before "
                        "the first update (--admin-profile-to)")  # fmt: skip
            raise SystemExit(0)

    def write_profile(self, path):
        """Write the omegas as ``{"encoder": [...], "decoder": [...]}``, one value per
        sub-layer in order (what :func:`load_omega_profile` reads); atomically."""
        profile = {
            side: [module.omega.detach().float().reshape(-1)[0].item()
                   for _, module in _omega_residuals(stack)]
            for side, stack in (("encoder", self.encoder), ("decoder", self.decoder))
        }  # fmt: skip
        atomic.write_text(path, json.dumps(profile, indent=1) + "\n")


# ---------------------------------------------------------------------------------------
# The base architecture: the Admin flags' defaults, then fairseq's transformer. The defaults
# live here, not in add_args (fairseq's convention), so that a checkpoint written before a
# flag existed still loads; the other presets are in presets.py.
# ---------------------------------------------------------------------------------------


def _admin_defaults(args):
    options.set_defaults(args)


@register_model_architecture("transformer_admin", "transformer_admin")
def base_architecture(args):
    _admin_defaults(args)
    fairseq_archs.base_architecture(args)
