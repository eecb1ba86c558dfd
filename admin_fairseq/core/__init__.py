"""Framework-free core of admin-fairseq: nothing here imports fairseq.

The public names mirror admin-torch (``OmegaResidual``, ``calculate_init``, ``as_module``,
``as_buffer``, ``as_parameter``), so ``import admin_fairseq.core as admin_torch`` is a
drop-in switch. It also holds ReinMax (``reinmax``), the same authors' gradient estimator
for discrete variables.
"""

from admin_fairseq.core.omega import OUTPUT_CHANGE_SCALES, calculate_init, canonical_scale
from admin_fairseq.core.reinmax import gumbel_straight_through, reinmax, straight_through
from admin_fairseq.core.residual import OmegaResidual, as_buffer, as_module, as_parameter

__all__ = [
    "OUTPUT_CHANGE_SCALES",
    "OmegaResidual",
    "as_buffer",
    "as_module",
    "as_parameter",
    "calculate_init",
    "canonical_scale",
    "gumbel_straight_through",
    "reinmax",
    "straight_through",
]
