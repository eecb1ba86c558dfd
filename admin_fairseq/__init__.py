"""admin-fairseq: Admin (Liu et al., EMNLP 2020) for deep Post-LN Transformers in fairseq.

Load it as a fairseq plugin with ``--user-dir admin_fairseq`` (the path of this folder).
Importing the package registers the ``transformer_admin`` model and its presets when fairseq
is installed; the framework-free core (``admin_fairseq.core``) works without fairseq.
"""

from admin_fairseq.core import (  # noqa: F401
    OmegaResidual,
    as_buffer,
    as_module,
    as_parameter,
    calculate_init,
    reinmax,
)

__version__ = "0.1.0"

try:
    import fairseq  # noqa: F401
except ImportError:  # the core does not need fairseq
    pass
else:
    from admin_fairseq import checkpoint_compat, models  # noqa: F401  (registers the models)

    checkpoint_compat.allow_fairseq_checkpoints()
