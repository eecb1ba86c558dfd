"""Checkpoint loading: torch >= 2.6 compatibility and errors that name the file.

:func:`explain_unreadable_checkpoints` (below) turns torch's low-level errors for truncated
files into a message with the path and the fix. The rest of this note is about
:func:`allow_fairseq_checkpoints`: letting torch >= 2.6 load fairseq checkpoints without
turning off its pickle protection.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``, which refuses any Python
class not on an allowlist. fairseq's ``checkpoint_utils`` calls ``torch.load`` without the
argument, so resuming training or running ``fairseq-generate`` fails with
``UnpicklingError: Weights only load failed``.

The blunt fix, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, disables the check for every load in
the process, untrusted files included. Instead, importing this plugin adds to torch's
allowlist only the classes that a checkpoint written by fairseq 0.12 with this plugin
holds: ``argparse.Namespace`` (the model configuration inside ``cfg``). Everything else in
such a checkpoint is tensors, numbers, strings, lists and dicts. A checkpoint holding any
other class is still refused by torch, which names the class; load it with
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` only if you trust where it came from.
"""

import argparse
import functools
import pickle
import zipfile

import torch

#: The classes a fairseq checkpoint may hold beyond torch's own allowlist.
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def allow_fairseq_checkpoints():
    """Add the fairseq checkpoint classes to torch's ``weights_only`` allowlist.

    A no-op on torch versions without ``torch.serialization.add_safe_globals``.
    """
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:
        add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))


class CheckpointReadError(RuntimeError):
    """A checkpoint file that torch cannot read, with the file's name and what to do."""


def _looks_corrupt(err):
    text = str(err)
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return isinstance(err, (EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile)) or (
        isinstance(err, RuntimeError)
        and any(s in text for s in ("PytorchStreamReader", "zip archive", "unexpected EOF"))
    )


def explain_load_error(path, err):
    """A :class:`CheckpointReadError` naming ``path`` and the fix when ``err`` (raised while
    reading it) means a truncated or corrupt file or a ``weights_only`` refusal; else None."""
    if "Weights only load failed" in str(err):
        detail = next((line for line in str(err).splitlines() if "GLOBAL" in line), "")
        return CheckpointReadError(
            f"torch refused to unpickle checkpoint {path} with weights_only: it holds a "
            f"class that is not allowlisted ({detail.strip()[:200]}). If you trust the "
            "file, load it with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1"
        )
    if _looks_corrupt(err):
        first_line = (str(err).splitlines() or [""])[0][:160]
        return CheckpointReadError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {first_line}): the file "
            "is truncated or corrupt, e.g. written by a run killed while saving or on a full "
            "disk. Delete or move it and start from an earlier checkpoint (fairseq-train: "
            "--restore-file checkpoint_best.pt or a checkpointN.pt of the same --save-dir)"
        )
    return None


def explain_unreadable_checkpoints():
    """Make fairseq name the file and the fix when a checkpoint cannot be read.

    fairseq's ``checkpoint_utils.load_checkpoint_to_cpu`` (used to resume training and by
    ``fairseq-generate``) lets torch's low-level error through, e.g. "PytorchStreamReader
    failed reading zip archive", without the path. This wraps it (once) so that a
    truncated or corrupt file, and a file refused by ``weights_only``, raise
    :class:`CheckpointReadError` naming the file and what to do; every other error passes
    through unchanged.
    """
    from fairseq import checkpoint_utils

    load = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(load, "_admin_fairseq_explains_errors", False):
        return

    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return load(path, *args, **kwargs)
        except Exception as err:
            explained = explain_load_error(path, err)
            if explained is None:
                raise
            raise explained from err

    load_checkpoint_to_cpu._admin_fairseq_explains_errors = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu


def _receive_broadcast_object(obj, src_rank, group, dist_device):
    """fairseq's object broadcast (length, then the ``torch.save`` bytes), with the receiving
    ranks unpickling what rank ``src_rank`` of this same job serialised.

    fairseq resumes a run with several workers by loading ``checkpoint_last.pt`` on rank 0
    and broadcasting the loaded state, whose ``cfg`` is by then an omegaconf ``DictConfig``
    and which carries fairseq's tensor placeholders. Under torch >= 2.6 the other ranks'
    ``torch.load`` (``weights_only`` by default) refuses those classes, so every multi-GPU
    or multi-node run fails when it resumes. The bytes come from a peer of this process
    group, not from a file: rank 0 read the file itself under the allowlist above.
    """
    import io

    from fairseq.distributed import utils as dist_utils

    if dist_utils.get_rank(group) == src_rank:
        data = io.BytesIO()
        torch.save(obj, data)
        payload = torch.ByteTensor(data.getbuffer()).to(dist_device)
        dist_utils.broadcast(torch.LongTensor([len(payload)]).to(dist_device), src=src_rank, group=group)
        dist_utils.broadcast(payload, src=src_rank, group=group)
        return obj
    size = torch.LongTensor([0]).to(dist_device)
    dist_utils.broadcast(size, src=src_rank, group=group)
    payload = torch.ByteTensor(int(size.item())).to(dist_device)
    dist_utils.broadcast(payload, src=src_rank, group=group)
    return torch.load(io.BytesIO(payload.cpu().numpy()), map_location="cpu", weights_only=False)


def allow_resuming_on_several_workers():
    """Install :func:`_receive_broadcast_object` as fairseq's object broadcast (once)."""
    from fairseq.distributed import utils as dist_utils

    if dist_utils._broadcast_object_slow is not _receive_broadcast_object:
        dist_utils._broadcast_object_slow = _receive_broadcast_object
