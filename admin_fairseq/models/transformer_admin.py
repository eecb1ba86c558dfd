"""``transformer_admin``: fairseq's ``transformer`` with Admin residuals behind ``--admin-init``.

Without ``--admin-init`` the model builds fairseq's own encoder and decoder, so it is exactly
fairseq's ``transformer`` (same parameters for the same seed, same outputs, same state dict).
With it, every Post-LN sub-layer computes ``LN(omega * x + f(x))`` with omega from
:func:`admin_fairseq.core.calculate_init`, counted per stack (encoder ``N = 2L``, decoder
``N = 3L``).
"""

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

from admin_fairseq.core.omega import OUTPUT_CHANGE_SCALES, calculate_init, canonical_scale
from admin_fairseq.modules.transformer_layer import AdminDecoderLayer, AdminEncoderLayer

DEFAULT_OUTPUT_CHANGE_SCALE = "O(logn)"


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
        num_res_layers = 2 * cfg.encoder.layers
        omega = calculate_init(num_res_layers, cfg.admin_output_change_scale)
        layer = AdminEncoderLayer(
            cfg, omega, as_parameter=cfg.admin_as_parameter, return_fc=self.return_fc
        )
        return _wrap_like_fairseq(layer, cfg)


class AdminTransformerDecoder(TransformerDecoderBase):
    """fairseq's decoder built from :class:`AdminDecoderLayer` (N = 3 x layers, or 2 x
    layers without cross-attention)."""

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        sublayers_per_layer = 2 if no_encoder_attn else 3
        num_res_layers = sublayers_per_layer * cfg.decoder.layers
        omega = calculate_init(num_res_layers, cfg.admin_output_change_scale)
        layer = AdminDecoderLayer(
            cfg, omega, as_parameter=cfg.admin_as_parameter, no_encoder_attn=no_encoder_attn
        )
        return _wrap_like_fairseq(layer, cfg)


def check_admin_args(args):
    """Validate the Admin flags against the rest of the configuration.

    Raises ``ValueError`` naming the flag at fault; normalises the output-change scale's
    spelling (``default`` -> ``O(logn)``).
    """
    args.admin_output_change_scale = canonical_scale(
        args.admin_output_change_scale, "--admin-output-change-scale"
    )
    if not args.admin_init:
        if args.admin_as_parameter:
            raise ValueError(
                "--admin-as-parameter has no effect without --admin-init; add --admin-init "
                "or drop --admin-as-parameter"
            )
        if args.admin_output_change_scale != DEFAULT_OUTPUT_CHANGE_SCALE:
            raise ValueError(
                "--admin-output-change-scale has no effect without --admin-init; add "
                "--admin-init or drop --admin-output-change-scale"
            )
        return
    pre_ln = [
        flag
        for flag, on in (
            ("--encoder-normalize-before", args.encoder_normalize_before),
            ("--decoder-normalize-before", args.decoder_normalize_before),
        )
        if on
    ]
    if pre_ln:
        raise ValueError(
            f"--admin-init is defined for Post-LN Transformers only, but {' and '.join(pre_ln)} "
            "selects Pre-LN; drop --admin-init to train Pre-LN, or drop "
            f"{' and '.join(pre_ln)} to train Post-LN with Admin"
        )
    for flag, value in (
        ("--encoder-layers", args.encoder_layers),
        ("--decoder-layers", args.decoder_layers),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1 with --admin-init; got {value}")


@register_model("transformer_admin")
class AdminTransformerModel(TransformerModel):
    """fairseq's ``transformer`` with Admin (Liu et al., 2020) behind ``--admin-init``."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # No defaults here: they live in the architecture functions (fairseq convention),
        # so that checkpoints written before a flag existed still load.
        parser.add_argument(
            "--admin-init",
            action="store_true",
            help="rescale every Post-LN residual as LN(omega * x + f(x)) with Admin's "
            "omega; without it the model is exactly fairseq's transformer",
        )
        parser.add_argument(
            "--admin-output-change-scale",
            choices=OUTPUT_CHANGE_SCALES + ("default",),
            help="how the output change grows with depth, which sets omega: O(logn) "
            "(default; 'default' is an alias), O(1) (more stable), O(n) (omega = 1, "
            "vanilla Post-LN)",
        )
        parser.add_argument(
            "--admin-as-parameter",
            action="store_true",
            help="make each omega a trainable vector of size embed_dim (as in the "
            "published recipes) instead of a fixed scalar buffer",
        )

    @classmethod
    def build_model(cls, args, task):
        base_architecture(args)  # fill in flags missing from older checkpoints
        check_admin_args(args)
        return super().build_model(args, task)

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        if not cfg.admin_init:
            return super().build_encoder(args, src_dict, embed_tokens)
        return AdminTransformerEncoder(cfg, src_dict, embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        if not cfg.admin_init:
            return super().build_decoder(args, tgt_dict, embed_tokens)
        return AdminTransformerDecoder(
            cfg, tgt_dict, embed_tokens, no_encoder_attn=cfg.no_cross_attention
        )


# ---------------------------------------------------------------------------------------
# Architectures. Each preset sets only what differs from its parent, then calls it; the
# shapes mirror fairseq's presets of the same name. Admin stays off unless --admin-init is
# given, so every preset can be trained as Post-LN, Pre-LN or Admin by changing flags only.
# ---------------------------------------------------------------------------------------


def _admin_defaults(args):
    args.admin_init = getattr(args, "admin_init", False)
    args.admin_output_change_scale = getattr(
        args, "admin_output_change_scale", DEFAULT_OUTPUT_CHANGE_SCALE
    )
    args.admin_as_parameter = getattr(args, "admin_as_parameter", False)


@register_model_architecture("transformer_admin", "transformer_admin")
def base_architecture(args):
    _admin_defaults(args)
    fairseq_archs.base_architecture(args)


@register_model_architecture("transformer_admin", "transformer_admin_tiny")
def transformer_admin_tiny(args):
    _admin_defaults(args)
    fairseq_archs.tiny_architecture(args)


@register_model_architecture("transformer_admin", "transformer_admin_iwslt_de_en")
def transformer_admin_iwslt_de_en(args):
    _admin_defaults(args)
    fairseq_archs.transformer_iwslt_de_en(args)


@register_model_architecture("transformer_admin", "transformer_admin_wmt_en_de")
def transformer_admin_wmt_en_de(args):
    _admin_defaults(args)
    fairseq_archs.transformer_wmt_en_de(args)


@register_model_architecture("transformer_admin", "transformer_admin_vaswani_wmt_en_de_big")
def transformer_admin_vaswani_wmt_en_de_big(args):
    _admin_defaults(args)
    fairseq_archs.transformer_vaswani_wmt_en_de_big(args)


@register_model_architecture("transformer_admin", "transformer_admin_vaswani_wmt_en_fr_big")
def transformer_admin_vaswani_wmt_en_fr_big(args):
    _admin_defaults(args)
    fairseq_archs.transformer_vaswani_wmt_en_fr_big(args)


def _deep(encoder_layers, decoder_layers):
    """A base-width (512/2048/8 heads) preset with the given depth, as in the Admin papers."""

    def architecture(args):
        args.encoder_layers = getattr(args, "encoder_layers", encoder_layers)
        args.decoder_layers = getattr(args, "decoder_layers", decoder_layers)
        transformer_admin_wmt_en_de(args)

    architecture.__name__ = f"transformer_admin_{encoder_layers}_{decoder_layers}"
    architecture.__doc__ = (
        f"{encoder_layers}L-{decoder_layers}L Transformer of base width (Admin paper shapes)."
    )
    return register_model_architecture("transformer_admin", architecture.__name__)(architecture)


transformer_admin_18_18 = _deep(18, 18)  # Admin paper, WMT'14 En-De
transformer_admin_60_12 = _deep(60, 12)  # Very Deep Transformers, WMT'14 En-Fr/En-De
transformer_admin_100_100 = _deep(100, 100)  # admin-torch, WMT'14/'17 En-De
