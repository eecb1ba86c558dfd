"""The ``transformer_admin`` presets. Each sets only what differs from its parent, then calls
it; the shapes mirror fairseq's presets of the same name, and the deep ones (18L-18L, 60L-12L,
100L-100L) are the Admin papers'. Admin stays off unless ``--admin-init`` is given, so every
preset trains as Post-LN, Pre-LN or Admin by changing flags only. Imported after the model
is registered (:mod:`admin_fairseq.models`)."""

from fairseq.models import register_model_architecture
from fairseq.models.transformer import transformer_legacy as fairseq_archs

from admin_fairseq.models.transformer_admin import _admin_defaults


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
