"""admin-fairseq: Admin (Liu et al., EMNLP 2020) for deep Post-LN Transformers in fairseq.

Load it as a fairseq plugin with ``--user-dir admin_fairseq`` (the path of this folder):
fairseq then imports ``admin_fairseq.models``, which registers the ``transformer_admin`` model,
its presets and ``--optimizer radam`` (:mod:`admin_fairseq.plugin`). Importing this package
imports torch and the framework-free core only (``admin_fairseq.core``, with admin-torch's
names): no fairseq, and nothing in fairseq or torch is changed.
"""

from admin_fairseq.core import (  # noqa: F401
    OmegaResidual,
    as_buffer,
    as_module,
    as_parameter,
    calculate_init,
    reinmax,
)
from admin_fairseq.plugin import SUPPORTED_FAIRSEQ, UnsupportedFairseq, check_fairseq_version  # noqa: F401

__version__ = "0.1.0"
