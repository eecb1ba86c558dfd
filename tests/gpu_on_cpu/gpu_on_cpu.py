"""Run fairseq 0.12's GPU code paths on a CPU: a test-only shim, never part of the package.

The suite trains the command a GPU user runs, with ``--cpu`` added and nothing else (see
docs/development.md). fairseq 0.12 needs a CUDA device in four places on that path; this
module replaces exactly those four, and nothing runs differently on a machine with CUDA:

1. **The device key of the flat fp32 master buffer** (plain ``--fp16``): ``FP16Optimizer``
   files the flat buffer under ``torch.cuda.current_device()`` and later finds each
   parameter's gradient under ``p.device.index``. On a CPU the first raises and the second
   is ``None``; while the buffer is built, the key is ``None`` as well.
2. **``.cuda()`` at an overflow** (every fp16 run): ``Trainer.train_step`` sets the gradient
   norm to ``torch.tensor(0.0).cuda()`` when the loss scaler overflows. During a train step,
   ``Tensor.cuda`` returns the tensor itself.
3. **NCCL**: ``torch.distributed.init_process_group(backend="nccl")`` becomes gloo.
4. **DDP's device ids**: fairseq's ``pytorch_ddp`` wrapper passes ``device_ids=[device_id]``,
   which torch refuses for a module on the CPU; they are dropped for such a module.

How it reaches a test's subprocesses: :data:`ENV` puts this folder first on ``PYTHONPATH``;
``sitecustomize.py`` beside this file runs at interpreter start-up and installs an import
hook that applies each patch right after fairseq imports the module it belongs to.
In-process tests call :func:`install` (after importing fairseq) instead.
"""

import functools
import importlib.abc
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: the environment a test gives a subprocess that runs GPU code on the CPU
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           CUDA_VISIBLE_DEVICES="")  # fmt: skip
#: fairseq attribute set once the shim is in: the package's own --cpu/fp16 check reads it
MARK = "gpu_code_on_cpu_shim"


def _cuda_absent():
    import torch

    return not torch.cuda.is_available()


def _patch_fp16_optimizer(module):
    mixin = module._FP16OptimizerMixin
    build = mixin.build_fp32_params.__func__
    if getattr(build, "_shim", False):
        return

    @functools.wraps(build)
    def build_fp32_params(cls, args, params, flatten=True):
        import torch

        if not _cuda_absent():
            return build(cls, args, params, flatten)
        current = torch.cuda.current_device
        torch.cuda.current_device = lambda: None  # the index of a CPU tensor's device
        try:
            return build(cls, args, params, flatten)
        finally:
            torch.cuda.current_device = current

    build_fp32_params._shim = True
    mixin.build_fp32_params = classmethod(build_fp32_params)


def _patch_trainer(module):
    import torch

    original = module.Trainer.train_step
    if getattr(original, "_shim", False):
        return

    @functools.wraps(original)
    def train_step(self, *args, **kwargs):
        if not _cuda_absent():
            return original(self, *args, **kwargs)
        cuda = torch.Tensor.cuda
        torch.Tensor.cuda = lambda tensor, *_, **__: tensor
        try:
            return original(self, *args, **kwargs)
        finally:
            torch.Tensor.cuda = cuda

    train_step._shim = True
    module.Trainer.train_step = train_step
    setattr(module.Trainer, MARK, True)


def _patch_distributed(module):
    import torch.distributed as dist

    init = dist.init_process_group
    if getattr(init, "_shim", False):
        return

    @functools.wraps(init)
    def init_process_group(backend=None, *args, **kwargs):
        if backend == "nccl" and _cuda_absent():
            backend = "gloo"
        return init(backend, *args, **kwargs)

    init_process_group._shim = True
    dist.init_process_group = init_process_group
    module.dist.init_process_group = init_process_group


def _patch_ddp(module):
    ddp = module.DistributedDataParallel
    if getattr(ddp, "_shim", False):
        return

    def cpu_ddp(module=None, device_ids=None, output_device=None, **kwargs):
        if next(module.parameters()).device.type == "cpu":
            device_ids = output_device = None
        return ddp(module=module, device_ids=device_ids, output_device=output_device, **kwargs)

    cpu_ddp._shim = True
    module.DistributedDataParallel = cpu_ddp


PATCHES = {
    "fairseq.optim.fp16_optimizer": _patch_fp16_optimizer,
    "fairseq.trainer": _patch_trainer,
    "fairseq.distributed.utils": _patch_distributed,
    "fairseq.models.distributed_fairseq_model": _patch_ddp,
}


def install():
    """Apply every patch now (fairseq importable; for in-process tests)."""
    import importlib

    for name, patch in PATCHES.items():
        patch(importlib.import_module(name))


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of the modules in :data:`PATCHES` so that
    their patch runs as soon as the module has executed."""

    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            PATCHES[name](module)

        loader.exec_module = exec_and_patch
        return spec


def install_on_import():
    """Patch each fairseq module when it is first imported (from ``sitecustomize``)."""
    if not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
