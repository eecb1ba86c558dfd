"""The initial value of omega, the rescaling of a residual block's skip branch.

Admin (Liu et al., EMNLP 2020) writes each Post-LN sub-layer as ``LN(omega * x + f(x))``.
Choosing omega fixes how much the model's output can change after a parameter update,
as a function of the number of residual sub-layers ``N`` in one stack:

========================  ===================================  ==============================
``output_change_scale``   omega                                meaning
========================  ===================================  ==============================
``O(logn)`` (default)     ``sqrt((N + 1) / ln(N + 1) - 1)``    output change grows like log N
``O(1)``                  ``sqrt(N)``                          output change bounded in N
``O(n)``                  ``1``                                vanilla Post-LN (grows like N)
========================  ===================================  ==============================

``N`` counts the sub-layers of one stack only: an L-layer encoder has ``N = 2L``
(self-attention, FFN), an L-layer decoder ``N = 3L`` (self-attention, cross-attention, FFN).
"""

import math

#: The accepted output-change scales, in the order they are documented.
OUTPUT_CHANGE_SCALES = ("O(logn)", "O(1)", "O(n)")

#: Other spellings accepted for compatibility with admin-torch.
_ALIASES = {"default": "O(logn)"}


def canonical_scale(output_change_scale, argument_name="output_change_scale"):
    """Return the canonical spelling of an output-change scale, or raise ``ValueError``.

    ``argument_name`` is used in the error message so that a command-line front end can
    report the flag the user actually typed.
    """
    if isinstance(output_change_scale, str):
        scale = _ALIASES.get(output_change_scale, output_change_scale)
        if scale in OUTPUT_CHANGE_SCALES:
            return scale
    allowed = ", ".join(OUTPUT_CHANGE_SCALES + tuple(_ALIASES))
    raise ValueError(
        f"{argument_name} must be one of {allowed}; got {output_change_scale!r}"
    )


def check_num_res_layers(num_res_layers, argument_name="num_res_layers"):
    """Raise ``ValueError`` unless ``num_res_layers`` is an integer >= 1."""
    if isinstance(num_res_layers, bool) or not isinstance(num_res_layers, int):
        raise ValueError(
            f"{argument_name} must be an integer >= 1 (the number of residual sub-layers "
            f"in one stack); got {num_res_layers!r}"
        )
    if num_res_layers < 1:
        raise ValueError(
            f"{argument_name} must be >= 1 (the number of residual sub-layers in one "
            f"stack); got {num_res_layers}"
        )
    return num_res_layers


def calculate_init(num_res_layers, output_change_scale="O(logn)"):
    """Return the initial omega for a stack of ``num_res_layers`` residual sub-layers.

    >>> round(calculate_init(12), 4)
    2.017
    >>> round(calculate_init(12, "O(1)"), 4)
    3.4641
    >>> calculate_init(12, "O(n)")
    1.0
    """
    num_res_layers = check_num_res_layers(num_res_layers)
    scale = canonical_scale(output_change_scale)
    if scale == "O(n)":
        return 1.0
    if scale == "O(1)":
        return math.sqrt(num_res_layers)
    n_plus_1 = num_res_layers + 1
    return math.sqrt(n_plus_1 / math.log(n_plus_1) - 1.0)


def omega_table(layer_counts=(12, 18, 36, 120, 180, 300)):
    """A Markdown table of omega for each number of residual sub-layers and each scale."""
    lines = ["| N (sub-layers per stack) | " + " | ".join(OUTPUT_CHANGE_SCALES) + " |",
             "|---|" + "---|" * len(OUTPUT_CHANGE_SCALES)]  # fmt: skip
    for n in layer_counts:
        values = " | ".join(f"{calculate_init(n, s):.4f}" for s in OUTPUT_CHANGE_SCALES)
        lines.append(f"| {n} | {values} |")
    return "\n".join(lines)

