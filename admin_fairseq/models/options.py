"""The ``transformer_admin`` flags, each declared once: its name, default, help and kind.

:func:`add_args` makes fairseq's command-line flags from :data:`OPTIONS` (without defaults,
fairseq's convention for plugin flags: a checkpoint written before a flag existed has no
value for it, and the architecture fills it in); :func:`set_defaults` is what the
architecture functions call to fill in every flag a configuration lacks. The checks of a
configuration are in :mod:`admin_fairseq.models.checks`.
"""

from dataclasses import dataclass
from typing import Callable, Optional

from admin_fairseq.core.omega import OUTPUT_CHANGE_SCALES
from admin_fairseq.monitor import DEFAULT_INTERVAL, EXIT_UNSTABLE
from admin_fairseq.monitor.rules import DEFAULT_FACTOR

DEFAULT_OUTPUT_CHANGE_SCALE = "O(logn)"


@dataclass(frozen=True)
class Option:
    """One flag of the model: ``name`` is the attribute (``admin_init``), the flag its
    spelling with dashes (``--admin-init``). A switch (``default`` False) is a store-true
    flag; any other takes a value of ``type``."""

    name: str
    default: object
    help: str
    type: Optional[Callable] = None
    choices: Optional[tuple] = None
    metavar: Optional[str] = None

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    @property
    def switch(self):
        return self.default is False and self.type is None


OPTIONS = (
    Option("admin_init", False, "rescale every Post-LN residual as LN(omega * x + f(x)) with Admin's "
           "omega; without it the model is exactly fairseq's transformer"),
    Option("admin_output_change_scale", DEFAULT_OUTPUT_CHANGE_SCALE, "how the output change grows with "
           "depth, which sets omega: O(logn) (default; 'default' is an alias), O(1) (more stable), "
           "O(n) (omega = 1, vanilla Post-LN)", choices=OUTPUT_CHANGE_SCALES + ("default",)),
    Option("admin_as_parameter", False, "make each omega a trainable vector of size embed_dim (as in "
           "the published recipes) instead of a fixed scalar buffer"),
    Option("admin_profile", False, "with --admin-init: the original, profiled Admin; omega follows "
           "the variance recursion on the first training batch, then trains as vectors"),
    Option("admin_profile_from", None, "with --admin-init: take the profiled omegas from an earlier "
           "checkpoint (.pt) or JSON file instead of profiling (implies --admin-profile)", metavar="PATH"),
    Option("admin_profile_to", None, "with --admin-init: profile the first training batch, write the "
           "omegas to FILE (JSON, for --admin-profile-from) and stop before the first update", metavar="FILE"),
    Option("deepnet", False, "DeepNet/DeepNorm baseline: alpha-scaled skip branch, Xavier-normal "
           "initial weights of gain beta (v_proj, out_proj, fc1, fc2) and 1 (q_proj, k_proj); not "
           "with --admin-init"),
    Option("bf16_autocast", False, "compute in bfloat16 through torch.autocast: weights, gradients, "
           "optimizer state and checkpoints stay fp32, and no loss scaler is needed (GPUs with bf16, "
           "Ampere and newer, and CPUs); fairseq 0.12's own --bf16 runs on TPUs only"),
    Option("admin_omega_fp32", False, "with trainable omegas under --fp16/--memory-efficient-fp16: "
           "keep the omegas in fp32 while the rest of the model is fp16, so that small updates are "
           "not lost to fp16 rounding (off by default: the published recipes' behaviour)"),
    Option("admin_monitor_interval", 0, "every N updates, record per layer the branch's share of the "
           "variance before each LayerNorm, the omegas, the gradient norm and the output change the "
           "update caused on a fixed batch, in fairseq's log and TensorBoard, and warn when they leave "
           f"their early range (0: off, the default; {DEFAULT_INTERVAL} is a good start)",
           type=int, metavar="N"),
    Option("admin_monitor_factor", DEFAULT_FACTOR, "with --admin-monitor-interval: warn when the output "
           "change per update or a branch share leaves the range it held early in the run by more "
           f"than F times (default {DEFAULT_FACTOR:g})", type=float, metavar="F"),
    Option("admin_monitor_stop", False, "with --admin-monitor-interval: stop the run on the monitor's "
           f"first warning (exit status {EXIT_UNSTABLE}) instead of going on"),
)  # fmt: skip


def profiled(cfg):
    """Whether ``cfg`` is profiled Admin: ``--admin-profile``, or a profile given
    (``--admin-profile-from``), to be written (``--admin-profile-to``), or taken from a file
    when the model was trained (``admin_profile_source``, which its checkpoint records)."""
    return bool(getattr(cfg, "admin_profile", False) or getattr(cfg, "admin_profile_from", None)
                or getattr(cfg, "admin_profile_to", None) or getattr(cfg, "admin_profile_source", None))  # fmt: skip


def add_args(parser):
    """Add every flag of :data:`OPTIONS` to ``parser``, without a default."""
    for option in OPTIONS:
        if option.switch:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        else:
            parser.add_argument(option.flag, type=option.type, choices=option.choices,
                                metavar=option.metavar, help=option.help)  # fmt: skip


def set_defaults(args):
    """Give ``args`` the default of every flag of :data:`OPTIONS` it lacks."""
    for option in OPTIONS:
        setattr(args, option.name, getattr(args, option.name, option.default))
