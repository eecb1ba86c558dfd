"""fairseq's own checkpoint loading on torch >= 2.6, without turning off pickle protection.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``, which refuses any Python
class not on an allowlist. fairseq's ``checkpoint_utils`` calls ``torch.load`` without the
argument, so resuming training or running ``fairseq-generate`` fails with
``UnpicklingError: Weights only load failed``. The blunt fix,
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, disables the check for every load in the process,
untrusted files included. Instead, when fairseq loads the plugin, :func:`allow_fairseq_checkpoints`
adds to torch's allowlist only what a fairseq 0.12 checkpoint holds beyond plain data:
the classes of :func:`admin_fairseq.checkpoints.allowed_globals`, and
:func:`admin_fairseq.checkpoints.guard_fairseq_loader` makes fairseq read each file through
the project's one checkpoint reader first, which names the file and any refused class.

:func:`allow_resuming_on_several_workers` (below) is about bytes a run's rank 0 sends to the
other ranks, not about files.
"""

import torch

from admin_fairseq.checkpoints import allowed_globals


def allow_fairseq_checkpoints():
    """Add the fairseq checkpoint classes to torch's ``weights_only`` allowlist.

    A no-op on torch versions without ``torch.serialization.add_safe_globals``.
    """
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:
        add_safe_globals(list(allowed_globals()))


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


class _AtomicCopies:
    """fairseq's ``PathManager`` as ``checkpoint_utils`` sees it, but for ``copy``: a local
    copy goes to a temporary name beside the target and is renamed over it when complete."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def __getattr__(self, name):
        return getattr(self._path_manager, name)

    def copy(self, src_path, dst_path, overwrite=False, **kwargs):
        import os

        if "://" in str(dst_path) or (os.path.exists(dst_path) and not overwrite):
            return self._path_manager.copy(src_path, dst_path, overwrite=overwrite, **kwargs)
        import shutil

        from admin_fairseq import atomic

        with atomic.replacing(dst_path) as tmp:
            shutil.copyfile(src_path, tmp)
        return True


def atomic_checkpoint_copies():
    """fairseq writes a checkpoint under one name (through a temporary file, atomically) and
    copies it to the others: ``checkpoint_last.pt`` after an epoch or interval checkpoint,
    ``checkpoint_best.pt``. Those copies are made in place, so a crash or a kill while one is
    written leaves a truncated ``checkpoint_last.pt``, the file a resumed run reads. Make
    them through a temporary name and a rename, so that ``checkpoint_last.pt`` is always a
    whole checkpoint: the new one or the one before."""
    from fairseq import checkpoint_utils

    if not isinstance(checkpoint_utils.PathManager, _AtomicCopies):
        checkpoint_utils.PathManager = _AtomicCopies(checkpoint_utils.PathManager)
