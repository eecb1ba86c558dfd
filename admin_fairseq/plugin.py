"""Loading the plugin into fairseq: everything importing ``admin_fairseq`` does not do.

``import admin_fairseq`` (and ``admin_fairseq.core``, the admin-torch-compatible names) imports
torch only: no fairseq, whatever its version, and no change to fairseq or torch. :func:`load`
does the rest, once per process:

1. checks that the installed fairseq is a 0.12.x (:class:`UnsupportedFairseq` otherwise);
2. registers ``transformer_admin`` and its presets, and ``--optimizer radam``;
3. scoped changes to fairseq and torch, each needed by what the plugin adds
   (docs/development.md lists them with why): ``argparse.Namespace`` on torch's
   ``weights_only`` allowlist, so fairseq can load its own checkpoints on torch >= 2.6
   (:func:`admin_fairseq.checkpoint_compat.allow_fairseq_checkpoints`); fairseq's checkpoint
   loader reads each file through the project's one reader first
   (:func:`admin_fairseq.checkpoints.guard_fairseq_loader`); fairseq's object broadcast lets
   the other ranks of a resumed multi-worker run receive what rank 0 loaded
   (:func:`admin_fairseq.checkpoint_compat.allow_resuming_on_several_workers`); fairseq's
   copies of a checkpoint (``checkpoint_last.pt``, ``checkpoint_best.pt``) are written
   through a temporary name (:func:`admin_fairseq.checkpoint_compat.atomic_checkpoint_copies`).

fairseq's ``Trainer`` stays fairseq's own: the stability monitor's wrappers
(:func:`admin_fairseq.monitor.install`) are installed by a ``transformer_admin`` model built
with ``--admin-monitor-interval``, and the launcher's (:func:`admin_fairseq.resilience.install`)
by ``admin_fairseq.launch`` in the workers it starts; a run that asks for neither runs
fairseq's trainer untouched.

Who calls it: fairseq, when it loads the plugin with ``--user-dir`` (it imports
``admin_fairseq.models``, whose ``__init__`` calls :func:`load`), and the project's commands
that build or load models (translate, ct2, export, ``build_from_flags``, gpu_check), at the
point where they need it.
"""

import logging

from admin_fairseq.errors import UserError

SUPPORTED_FAIRSEQ = "0.12"  # fairseq 0.12.x: 0.12.2 from source, or the fairseq-fixed 0.12.3.1 wheel
_loaded = False


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
    """Import fairseq without changing the program's logging.

    Two of fairseq's task modules call ``logging.basicConfig(level=DEBUG)`` at import time,
    which would make every later library (matplotlib, ...) print its debug messages in any
    program that loads the plugin. Inside fairseq's own CLIs the root logger is set up before
    us and is left as it is.
    """
    root = logging.getLogger()
    handlers, level, disabled = list(root.handlers), root.level, logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        import fairseq

        return fairseq
    finally:
        logging.disable(disabled)
        if not handlers:
            for handler in list(root.handlers):
                root.removeHandler(handler)
            root.setLevel(level)


def load():
    """Check fairseq's version, register the plugin's model and optimizer, and make the
    scoped changes listed in the module's note. Idempotent; returns the fairseq module."""
    global _loaded
    fairseq = _import_fairseq_quietly()
    if _loaded:
        return fairseq
    check_fairseq_version(getattr(fairseq, "__version__", "unknown"), getattr(fairseq, "__file__", "?"))
    _loaded = True
    from admin_fairseq import checkpoint_compat, checkpoints
    from admin_fairseq.models import transformer_admin  # noqa: F401  registers transformer_admin
    from admin_fairseq.models import presets  # noqa: F401  and its presets (transformer_admin_*)
    from admin_fairseq.optim import radam  # noqa: F401  registers --optimizer radam

    checkpoint_compat.allow_fairseq_checkpoints()
    checkpoint_compat.allow_resuming_on_several_workers()
    checkpoint_compat.atomic_checkpoint_copies()
    checkpoints.guard_fairseq_loader()
    return fairseq
