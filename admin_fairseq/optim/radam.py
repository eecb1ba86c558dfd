"""``--optimizer radam``: torch's own ``torch.optim.RAdam`` behind fairseq's optimizer flags.

The original Admin runs (Transformer-Clinic, WMT'14 En-Fr and IWSLT'14 De-En) trained with
RAdam (Liu et al., ICLR 2020) from the authors' own fairseq plugin. fairseq 0.12 has no
RAdam, so this registers one under the same name, taking the same flags as fairseq's Adam:
``--adam-betas``, ``--adam-eps`` and ``--weight-decay`` (applied decoupled, as in the
authors' plugin: ``p -= lr * wd * p``).

One difference from the authors' implementation, documented in docs/published-settings.md:
in the first few steps, while RAdam's variance estimate is not yet tractable (rho_t <= 5;
about 5 steps with beta2 = 0.98), torch takes an un-adapted momentum step of size
``lr * m_hat`` where the authors' code skips the update. With the recipes' warm-up from
lr 1e-7 those steps move each weight by about 1e-7.

torch's RAdam keeps its state in the parameters' dtype, so it is used with fp32 weights:
plain ``--fp16`` (fairseq keeps fp32 master weights, as the published runs did), ``--amp``
or fp32. ``--memory-efficient-fp16`` would keep its moments in fp16 and is refused by
fairseq for this optimizer (``supports_memory_efficient_fp16`` is False).

Under plain ``--fp16`` on a GPU, fairseq keeps those fp32 master weights in one flat tensor
and refuses an optimizer that does not declare ``supports_flat_params``. RAdam is
element-wise (each entry's moments and step depend on that entry alone, the step count is
shared), so it declares it: a flat tensor and the separate parameters get the same update.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, List

import torch
from fairseq.dataclass import FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II


@dataclass
class RAdamConfig(FairseqDataclass):
    adam_betas: Any = field(default=(0.9, 0.999), metadata={"help": "betas for RAdam"})
    adam_eps: float = field(default=1e-8, metadata={"help": "epsilon for RAdam"})
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay"})
    lr: List[float] = II("optimization.lr")


def _betas(value):
    betas = eval(value) if isinstance(value, str) else tuple(value)  # fairseq's own convention
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"--adam-betas must be two numbers in [0, 1), e.g. '(0.9, 0.98)'; got {value!r}")
    return tuple(float(b) for b in betas)


@register_optimizer("radam", dataclass=RAdamConfig)
class FairseqRAdam(FairseqOptimizer):
    def __init__(self, cfg, params):
        super().__init__(cfg)
        self._optimizer = torch.optim.RAdam(params, **self.optimizer_config)

    @property
    def supports_flat_params(self):
        return True

    @property
    def optimizer_config(self):
        return {
            "lr": self.cfg.lr[0] if isinstance(self.cfg.lr, Sequence) else self.cfg.lr,
            "betas": _betas(self.cfg.adam_betas),
            "eps": self.cfg.adam_eps,
            "weight_decay": self.cfg.weight_decay,
            "decoupled_weight_decay": True,
        }
