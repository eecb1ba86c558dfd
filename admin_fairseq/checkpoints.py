"""The one reader of every checkpoint the project opens: a file from someone else never runs.

A PyTorch checkpoint is a pickle, and unpickling can call any Python function the file
names. Every command of the project reads checkpoints through :func:`read`: torch's
``weights_only`` unpickler with exactly the classes a fairseq 0.12 checkpoint written with
this plugin holds beyond tensors, numbers, strings, lists and dicts, namely
``argparse.Namespace`` (the model settings). A file that names anything else is refused
before anything in it runs, with an error that names the file and the class.

Who reads through it: the CTranslate2 conversion and the translate command
(:func:`read_settings`), the evaluate step's averaging, ``--admin-profile-from``,
``gpu_check``, and fairseq's own ``load_checkpoint_to_cpu`` (resuming a run,
``fairseq-generate``, the export), which :func:`guard_fairseq_loader` makes read the file
through :func:`read` first once fairseq has loaded the plugin.
"""

import argparse
import contextlib
import functools
import re
from pathlib import Path

from admin_fairseq.errors import UserError

#: The classes a fairseq checkpoint may hold beyond torch's own allowlist.
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot or must not be read; the message names the file."""


def _explain(path, err):
    """A :class:`CheckpointError` for ``err``, raised by torch while reading ``path``."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:  # torch's weights_only unpickler met a class that is not allowed
        return CheckpointError(
            f"checkpoint {path} holds {found.group(1)}, which no fairseq checkpoint holds (they "
            "hold tensors, numbers, strings, lists, dicts and argparse.Namespace); it was refused "
            "unread, because unpickling it could run code from the file. Only if you made the "
            "file yourself: load it with torch.load(..., weights_only=False) and save its "
            "'model' and 'cfg' again as plain tensors and dicts"
        )
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {text[:200]})")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((lines[i + 1] for i, line in enumerate(lines[:-1]) if line.endswith("WeightsUnpickler error:")),
                  lines[0][:160] if lines else "")  # fmt: skip
    return CheckpointError(
        f"checkpoint {path} cannot be read ({type(err).__name__}: {detail}): it is not a readable "
        "PyTorch checkpoint; the file is truncated or corrupt (e.g. written by a run killed "
        "while saving, or on a full disk) or not a checkpoint at all. Delete or move it and start "
        "from an earlier checkpoint (fairseq-train: --restore-file checkpoint_best.pt or a "
        "checkpointN.pt of the same --save-dir)"
    )


def read(path, mmap=False):
    """The checkpoint at ``path``, on the CPU, read with torch's ``weights_only`` unpickler
    and the fairseq allowlist. Raises :class:`CheckpointError` naming the file.

    ``mmap=True`` maps the tensors instead of reading them, for callers that need only the
    settings: the tensors then stay views of the file, and change if the file is rewritten
    in place (fairseq copies over ``checkpoint_last.pt``), so a caller that keeps tensors
    reads them whole (the default). A file in torch's legacy format is always read whole."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist" if not path.exists()
                              else f"checkpoint {path} is not a file")  # fmt: skip
    serialization = torch.serialization
    if not hasattr(serialization, "safe_globals"):
        raise CheckpointError(f"reading {path} safely needs torch >= 2.5 (torch.serialization."
                              f"safe_globals); this is torch {torch.__version__}")  # fmt: skip
    missing = [g for g in FAIRSEQ_CHECKPOINT_GLOBALS if g not in serialization.get_safe_globals()]
    # torch's context removes on exit what it added, even what was allowed before it: only
    # the classes not yet allowed go in it, so a global allowlist (fairseq's loads) stays
    with serialization.safe_globals(missing) if missing else contextlib.nullcontext():
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap" in str(err)):
                raise _explain(path, err) from err
        except Exception as err:
            raise _explain(path, err) from err
        try:  # the legacy (pre-zip) format cannot be mapped
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise _explain(path, err) from err


def read_settings(path):
    """``(state, model settings as a Namespace, task settings as a dict)`` of a fairseq
    checkpoint, its tensors mapped, not read. Raises :class:`CheckpointError`."""
    state = read(path, mmap=True)
    cfg = state.get("cfg") if isinstance(state, dict) else None
    if not cfg or cfg.get("model") is None:
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no cfg.model in it)")
    model = cfg["model"]
    model = argparse.Namespace(**model) if isinstance(model, dict) else model
    task = cfg.get("task") or {}
    task = dict(task) if isinstance(task, dict) else dict(vars(task))
    return state, model, task


def guard_fairseq_loader():
    """Make fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` (resume, fairseq-generate,
    export) read each file through :func:`read` first (once; idempotent), so that a file
    holding anything but the allowlist is refused by name, whatever torch's default for
    ``weights_only``; then fairseq loads it as usual (its upgrades of older formats)."""
    from fairseq import checkpoint_utils

    load = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(load, "_admin_fairseq_guard", False):
        return

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        read(path, mmap=True)  # the check only: fairseq reads the file itself next
        return load(path, *args, **kwargs)

    load_checkpoint_to_cpu._admin_fairseq_guard = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def load_fairseq(path):
    """fairseq's own loading of ``path`` (a dict with its settings upgraded), guarded."""
    from admin_fairseq import plugin

    plugin.load()  # includes guard_fairseq_loader
    from fairseq import checkpoint_utils

    return checkpoint_utils.load_checkpoint_to_cpu(str(path))
