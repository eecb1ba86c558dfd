"""The one reader of every checkpoint the project opens: a file from someone else never runs.

A PyTorch checkpoint is a pickle, and unpickling can call any Python function the file
names. Every command of the project reads checkpoints through :func:`read`: torch's
``weights_only`` unpickler with exactly the classes that checkpoints written by fairseq 0.12
and its published models hold beyond tensors, numbers, strings, lists and dicts
(:func:`allowed_globals`: the model settings as ``argparse.Namespace`` or omegaconf's
containers, the numpy arrays and scalars of ``--eval-bleu`` metrics, a task's fairseq
``Dictionary``). None of them runs code of the file's choosing: each only holds data, and the
few functions among them (numpy's array and scalar constructors) build a value of an allowed
type. A file that names anything else is refused before anything in it runs, with an error
that names the file and the class.

The file is read once, into memory, and the bytes that were checked are the bytes that are
loaded: :func:`guard_fairseq_loader` hands fairseq's ``load_checkpoint_to_cpu`` the state
:func:`read` made, so a file replaced between a check and a second read cannot slip through.

Who reads through it: the CTranslate2 conversion and the translate command
(:func:`read_settings`), the evaluate step's averaging, ``--admin-profile-from``,
``gpu_check``, and fairseq's own ``load_checkpoint_to_cpu`` (resuming a run,
``fairseq-generate``, the export), once fairseq has loaded the plugin.
"""

import argparse
import collections
import contextlib
import functools
import io
import re
import threading
import typing
from pathlib import Path

from admin_fairseq.errors import UserError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _numpy_globals():
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    kinds = [type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                                         "uint32", "uint64", "float16", "float32", "float64")]  # fmt: skip
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar, *kinds]


def _omegaconf_globals():
    try:
        from omegaconf import DictConfig, ListConfig, base, nodes
    except ImportError:
        return []
    node_types = [getattr(nodes, name) for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode",
                                                    "BooleanNode", "BytesNode", "PathNode") if hasattr(nodes, name)]  # fmt: skip
    return [DictConfig, ListConfig, base.ContainerMetadata, base.Metadata, *node_types,
            typing.Any, dict, list, int, float, str, bool, collections.defaultdict]  # fmt: skip


@functools.lru_cache(maxsize=None)
def allowed_globals():
    """The classes (and numpy's two constructors) a fairseq checkpoint may hold beyond torch's
    own allowlist. fairseq's ``Dictionary`` is added by :func:`read` only when a file names it,
    so that reading a checkpoint does not import fairseq."""
    return tuple([argparse.Namespace, *_numpy_globals(), *_omegaconf_globals()])


def _fairseq_dictionary():
    from fairseq.data.dictionary import Dictionary

    return Dictionary


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot or must not be read; the message names the file."""


class MissingCheckpoint(CheckpointError, FileNotFoundError):
    """A checkpoint path where there is no file (a ``FileNotFoundError``, as fairseq raises)."""


def _explain(path, err):
    """A :class:`CheckpointError` for ``err``, raised by torch while reading ``path``."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:  # torch's weights_only unpickler met a class that is not allowed
        return CheckpointError(
            f"checkpoint {path} holds {found.group(1)}, which is not among the classes fairseq "
            "checkpoints hold (tensors, numbers, strings, lists, dicts, argparse.Namespace, "
            "omegaconf containers, numpy arrays, fairseq's Dictionary); it was refused unread, "
            "because unpickling a class that is not known to hold only data could run code from "
            "the file. Only if you made the file yourself: load it with torch.load(..., "
            "weights_only=False) and save its 'model' and 'cfg' again as plain tensors and dicts"
        )
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


def _read_bytes(path):
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise MissingCheckpoint(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is not a file") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from None


def _allowing(path, extra=()):
    """torch's ``safe_globals`` context with the allowlist (and ``extra``)."""
    import torch

    serialization = torch.serialization
    if not hasattr(serialization, "safe_globals"):
        raise CheckpointError(f"reading {path} safely needs torch >= 2.5 (torch.serialization."
                              f"safe_globals); this is torch {torch.__version__}")  # fmt: skip
    allowed = set(map(id, serialization.get_safe_globals()))
    # torch's context removes on exit what it added, even what was allowed before it: only
    # the classes not yet allowed go in it, so a global allowlist (fairseq's loads) stays
    missing = [g for g in (*allowed_globals(), *extra) if id(g) not in allowed]
    return serialization.safe_globals(missing) if missing else contextlib.nullcontext()


def _load(data, path, extra=()):
    """``torch.load`` of the bytes ``data`` (from ``path``) under the allowlist."""
    import torch

    with _allowing(path, extra):
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def read(path, mmap=False):
    """The checkpoint at ``path``, on the CPU, read with torch's ``weights_only`` unpickler
    and the fairseq allowlist. Raises :class:`CheckpointError` naming the file
    (:class:`MissingCheckpoint`, a ``FileNotFoundError``, when there is no file).

    ``mmap=True`` maps the tensors instead of reading them, for callers that need only the
    settings (a large model's settings without its weights in memory); the tensors then stay
    views of the file. Without it (the default) the file is read once, whole, and loaded from
    those bytes."""
    import torch

    path = Path(path)
    if mmap:
        if not path.is_file():
            _read_bytes(path)  # raises the error that names what is wrong
        try:
            with _allowing(path):
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # the legacy (pre-zip) format cannot be mapped; anything else: below
            pass
    data = _read_bytes(path)
    try:
        return _load(data, path)
    except Exception as err:
        if "fairseq.data.dictionary.Dictionary" in str(err):
            try:
                return _load(data, path, extra=(_fairseq_dictionary(),))
            except Exception as again:
                raise _explain(path, again) from again
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


class _Loaded:
    """What ``checkpoint_utils`` sees as ``torch`` while it loads one checked file: torch, but
    ``load`` returns the state :func:`read` made from the bytes it checked."""

    def __init__(self, torch, state):
        self._torch, self._state = torch, state

    def load(self, *args, **kwargs):
        return self._state

    def __getattr__(self, name):
        return getattr(self._torch, name)


_LOADING = threading.Lock()


def guard_fairseq_loader():
    """Make fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` (resume, fairseq-generate,
    export) load each file through :func:`read` (once; idempotent): a file holding anything
    but the allowlist is refused by name, whatever torch's default for ``weights_only``, and
    fairseq's own upgrades of older formats then run on the state that was checked."""
    from fairseq import checkpoint_utils

    load = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(load, "_admin_fairseq_guard", False):
        return

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        local = checkpoint_utils.PathManager.get_local_path(path)
        state = read(local)
        with _LOADING:
            torch = checkpoint_utils.torch
            checkpoint_utils.torch = _Loaded(torch, state)
            try:
                return load(path, *args, **kwargs)
            finally:
                checkpoint_utils.torch = torch

    load_checkpoint_to_cpu._admin_fairseq_guard = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu
