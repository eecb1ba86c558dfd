"""DeepNorm constants (Wang et al., 2022, "DeepNet: Scaling Transformers to 1,000 Layers").

DeepNet is a baseline here: ``LN(alpha * x + f(x))`` with a fixed ``alpha`` on the skip
branch, and the initial weights of the value and output projections of every attention
(cross-attention included) and of both FFN layers drawn from Xavier-normal with gain
``beta`` (the query and key projections with gain 1).

For an encoder-decoder with ``N`` encoder and ``M`` decoder layers:

==========  ==========================  ===========================
stack       alpha                       beta
==========  ==========================  ===========================
encoder     ``0.81 (N^4 M)^(1/16)``     ``0.87 (N^4 M)^(-1/16)``
decoder     ``(3 M)^(1/4)``             ``(12 M)^(-1/4)``
==========  ==========================  ===========================

and for an encoder-only or decoder-only stack of ``N`` layers, ``alpha = (2N)^(1/4)``,
``beta = (8N)^(-1/4)``.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DeepNormConstants:
    alpha: float  # scale of the skip branch
    beta: float  # Xavier-normal gain of v_proj, out_proj, fc1, fc2


def _check_layers(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")


def encoder_decoder_constants(encoder_layers, decoder_layers):
    """``(encoder, decoder)`` DeepNorm constants of an encoder-decoder model."""
    _check_layers(encoder_layers, "encoder_layers")
    _check_layers(decoder_layers, "decoder_layers")
    n4m = encoder_layers**4 * decoder_layers
    encoder = DeepNormConstants(alpha=0.81 * n4m ** (1 / 16), beta=0.87 * n4m ** (-1 / 16))
    decoder = DeepNormConstants(
        alpha=(3 * decoder_layers) ** 0.25, beta=(12 * decoder_layers) ** -0.25
    )
    return encoder, decoder


def single_stack_constants(num_layers):
    """DeepNorm constants of an encoder-only or decoder-only model."""
    _check_layers(num_layers, "num_layers")
    return DeepNormConstants(alpha=(2 * num_layers) ** 0.25, beta=(8 * num_layers) ** -0.25)
