"""Let torch >= 2.6 load fairseq checkpoints without turning off its pickle protection.

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
