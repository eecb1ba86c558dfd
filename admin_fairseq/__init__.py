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

import logging

from admin_fairseq.errors import UserError

__version__ = "0.1.0"
SUPPORTED_FAIRSEQ = "0.12"  # fairseq 0.12.x: 0.12.2 from source, or the fairseq-fixed 0.12.3.1 wheel


class UnsupportedFairseq(UserError, ImportError):
    """The installed fairseq is not a version this plugin works with."""


def check_fairseq_version(version, where="fairseq"):
    """Raise UnsupportedFairseq unless ``version`` is a fairseq 0.12.x."""
    parts = str(version).split(".")
    if parts[:2] != SUPPORTED_FAIRSEQ.split("."):
        raise UnsupportedFairseq(
            f"admin-fairseq needs fairseq {SUPPORTED_FAIRSEQ}.x (0.12.2 built from source, or "
            f"fairseq-fixed 0.12.3.1 on Python 3.11); found fairseq {version} ({where}). Install a "
            f"supported one, e.g. pip install 'admin-fairseq[fairseq]' or scripts/setup_env.sh"
        )  # fmt: skip


def _import_fairseq_quietly():
    """Import fairseq and register our models without changing the program's logging.

    Two of fairseq's task modules call ``logging.basicConfig(level=DEBUG)`` at import time,
    which would make every later library (matplotlib, ...) print its debug messages in any
    program that imports this package. Inside fairseq's own CLIs the root logger is set up
    before us and is left as it is.
    """
    root = logging.getLogger()
    handlers, level, disabled = list(root.handlers), root.level, logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        import fairseq  # noqa: F401
    except ImportError:  # the core does not need fairseq
        return False
    else:
        check_fairseq_version(getattr(fairseq, "__version__", "unknown"), getattr(fairseq, "__file__", "?"))
        from admin_fairseq import checkpoint_compat, checkpoints, models, optim  # noqa: F401

        checkpoint_compat.allow_fairseq_checkpoints()
        checkpoint_compat.allow_resuming_on_several_workers()
        checkpoints.guard_fairseq_loader()
        return True
    finally:
        logging.disable(disabled)
        if not handlers:
            for handler in list(root.handlers):
                root.removeHandler(handler)
            root.setLevel(level)


HAS_FAIRSEQ = _import_fairseq_quietly()
