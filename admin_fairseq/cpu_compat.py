"""Half precision on CPU processes: the one place where fairseq 0.12 insists on CUDA.

fairseq's fp16 optimizers and loss scaler run with ``--cpu`` (that is how this project
tests the recipes' fp16 path without a GPU), except for one line: when the loss scaler
finds an overflow, ``Trainer.train_step`` replaces the gradient norm by
``torch.tensor(0.0).cuda()``, which raises ``Torch not compiled with CUDA enabled`` in a
process without CUDA. A run then dies at its first overflow, which every fp16 run meets
(the scaler starts high and halves until the gradients fit).

:func:`allow_overflow_recovery_on_cpu` wraps ``Trainer.train_step``: in a ``--cpu`` run in
a process where CUDA is not available, ``Tensor.cuda`` returns the tensor itself for the
duration of the step (it could not succeed there anyway). Everything else is fairseq's
own code path: the update is skipped, the scale is halved, training goes on. On a machine
with CUDA, and in every run without ``--cpu``, nothing changes.
"""

import functools

import torch


def _cpu_only(trainer):
    common = getattr(getattr(trainer, "cfg", None), "common", None)
    return bool(getattr(common, "cpu", False)) and not torch.cuda.is_available()


def allow_overflow_recovery_on_cpu():
    """Patch ``fairseq.trainer.Trainer.train_step`` once (see the module's note)."""
    from fairseq import trainer as fairseq_trainer

    original = fairseq_trainer.Trainer.train_step
    if getattr(original, "_admin_fairseq_cpu", False):
        return

    @functools.wraps(original)
    def train_step(self, *args, **kwargs):
        if not _cpu_only(self):
            return original(self, *args, **kwargs)
        cuda = torch.Tensor.cuda
        torch.Tensor.cuda = lambda tensor, *_, **__: tensor
        try:
            return original(self, *args, **kwargs)
        finally:
            torch.Tensor.cuda = cuda

    train_step._admin_fairseq_cpu = True
    fairseq_trainer.Trainer.train_step = train_step
