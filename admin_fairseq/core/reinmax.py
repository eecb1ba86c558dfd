"""ReinMax (Liu et al., NeurIPS 2023): a second-order straight-through gradient estimator.

A categorical sample ``D`` (one-hot) drawn from ``softmax(logits)`` has no gradient. The
straight-through estimator (ST) back-propagates through it as if ``D`` were the softmax
itself (forward Euler). ReinMax uses Heun's method instead: with ``J(p) = diag(p) - p p^T``,
``pi0 = softmax(logits)``, ``pi_tau = softmax(logits / tau)``, ``g = dL/dD`` and
``g_p = dL/dy_soft``, the gradient reaching the logits is

    2 J((pi_tau + D) / 2) g  -  1/2 J(pi0) g  +  J(pi0) g_p

For a loss that is quadratic in ``D`` and ``tau = 1`` its expectation is the exact
gradient of ``E[f(D)]``; ST's is not. It costs one more softmax than ST.

Here, unlike the reference package: any shape and any category dimension, non-contiguous
input, sampling and gradients computed in float32 for fp16/bf16 input and in float64 for
float64 input (results come back in the input dtype), an optional ``torch.Generator``, and clear errors for ``tau < 1`` and
non-finite logits.
"""

import math

import torch


def _check_tau(tau):
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
        raise ValueError(f"tau must be a finite number >= 1; got {tau!r}")
    if tau < 1.0:
        raise ValueError(
            f"tau must be >= 1 for ReinMax (the temperature only enters the backward pass, "
            f"and tau < 1 breaks its second-order accuracy); got {tau}"
        )
    return float(tau)


def _check_logits(logits, check_finite):
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor")
    if logits.dim() == 0:
        raise ValueError("logits must have at least one dimension (the categories)")
    if check_finite and not bool(torch.isfinite(logits).all()):
        raise ValueError(
            "logits contain NaN or infinity; a categorical sample is undefined for them "
            "(mask categories with a large negative finite value instead of -inf)"
        )


def _to_2d(logits, dim):
    """``logits`` with the category dimension last, flattened to 2-D, in the wider of
    float32 and its own dtype (fp16/bf16 are computed in float32, float64 stays float64)."""
    moved = logits.movedim(dim, -1)
    wide = torch.promote_types(moved.dtype, torch.float32)
    return moved.to(wide).reshape(-1, moved.shape[-1]), moved.shape


def _from_2d(tensor, moved_shape, dim, dtype):
    return tensor.reshape(moved_shape).movedim(-1, dim).to(dtype)


def _sample_one_hot(probs, generator):
    index = torch.multinomial(probs, 1, generator=generator)
    return torch.zeros_like(probs).scatter_(-1, index, 1.0)


def _jvp_softmax(p, g):
    """``J(p) g`` row-wise, with ``J(p) = diag(p) - p p^T``, without forming ``J``."""
    return p * g - p * (p * g).sum(dim=-1, keepdim=True)


class _ReinMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, tau, dim, generator):
        flat, moved_shape = _to_2d(logits, dim)
        pi0 = torch.softmax(flat, dim=-1)
        sample = _sample_one_hot(pi0, generator)
        ctx.save_for_backward(flat, pi0, sample)
        ctx.tau, ctx.dim, ctx.moved_shape, ctx.dtype = tau, dim, moved_shape, logits.dtype
        y_hard = _from_2d(sample, moved_shape, dim, logits.dtype)
        y_soft = _from_2d(pi0, moved_shape, dim, logits.dtype)
        return y_hard, y_soft

    @staticmethod
    def backward(ctx, grad_hard, grad_soft):
        flat, pi0, sample = ctx.saved_tensors
        grad = torch.zeros_like(flat)
        if grad_hard is not None:
            g = _to_2d(grad_hard, ctx.dim)[0]
            pi_tau = pi0 if ctx.tau == 1.0 else torch.softmax(flat / ctx.tau, dim=-1)
            grad += 2.0 * _jvp_softmax((pi_tau + sample) / 2.0, g)
            grad -= 0.5 * _jvp_softmax(pi0, g)
        if grad_soft is not None:
            grad += _jvp_softmax(pi0, _to_2d(grad_soft, ctx.dim)[0])
        return _from_2d(grad, ctx.moved_shape, ctx.dim, ctx.dtype), None, None, None


def reinmax(logits, tau=1.0, dim=-1, generator=None, check_finite=True):
    """Sample a one-hot ``y_hard`` from ``softmax(logits)`` with ReinMax gradients.

    Args:
        logits: unnormalised log-probabilities, any shape; fp16/bf16 are computed in fp32,
            float64 in float64.
        tau: temperature >= 1 used in the backward pass only (``pi_tau``); the sample is
            always drawn at temperature 1.
        dim: the category dimension.
        generator: an optional ``torch.Generator`` for reproducible samples.
        check_finite: reject NaN/inf logits (one device sync; turn off in hot loops once
            the inputs are known to be finite).

    Returns:
        ``(y_hard, y_soft)``: the one-hot sample and ``softmax(logits)``, both in the
        dtype and layout of ``logits``. Gradients reach ``logits`` through both.
    """
    tau = _check_tau(tau)
    _check_logits(logits, check_finite)
    dim = dim % logits.dim()
    return _ReinMax.apply(logits, tau, dim, generator)


def straight_through(logits, dim=-1, generator=None, check_finite=True):
    """The plain straight-through estimator, for comparison: the same sample as
    :func:`reinmax` (for the same generator state), with gradient ``J(pi0) (g + g_p)``."""
    _check_logits(logits, check_finite)
    dim = dim % logits.dim()
    flat, moved_shape = _to_2d(logits, dim)
    y_soft = torch.softmax(flat, dim=-1)
    sample = _sample_one_hot(y_soft.detach(), generator)
    y_hard = sample - y_soft.detach() + y_soft
    return (
        _from_2d(y_hard, moved_shape, dim, logits.dtype),
        _from_2d(y_soft, moved_shape, dim, logits.dtype),
    )


def gumbel_straight_through(logits, tau=1.0, dim=-1, generator=None, check_finite=True):
    """Straight-through Gumbel-softmax: ``y_hard`` is the one-hot argmax of
    ``softmax((logits + G) / tau)`` with Gumbel noise ``G``, and gradients flow through that
    relaxed sample. Returns ``(y_hard, y_relaxed)``."""
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number; got {tau!r}")
    _check_logits(logits, check_finite)
    dim = dim % logits.dim()
    flat, moved_shape = _to_2d(logits, dim)
    # Gumbel(0, 1) noise is -log of an Exponential(1) draw
    gumbel = -torch.empty_like(flat).exponential_(generator=generator).log()
    relaxed = torch.softmax((flat + gumbel) / tau, dim=-1)
    index = relaxed.detach().argmax(dim=-1, keepdim=True)
    hard = torch.zeros_like(relaxed).scatter_(-1, index, 1.0)
    y_hard = hard - relaxed.detach() + relaxed
    return (
        _from_2d(y_hard, moved_shape, dim, logits.dtype),
        _from_2d(relaxed, moved_shape, dim, logits.dtype),
    )
