"""A per-layer stability monitor for ``transformer_admin`` while it trains (``--admin-monitor-interval N``).

Every ``N`` updates, on rank 0, the monitor records the two quantities the
Admin paper explains instability with, plus what a diverging run is usually debugged with:

- ``share/<stack>.<layer>.<sub-layer>``: the branch's share of the variance before the
  sub-layer's LayerNorm (Pre-LN: of the sum), ``Var[f(x)] / Var[omega x + f(x)]`` (omega = 1
  without Admin), on a fixed batch of :data:`FIXED_SENTENCES` training sentences (the first
  ones rank 0 trains on), in evaluation mode (no dropout), before the update;
- ``omega/...`` (and ``omega_min/...``, ``omega_max/...`` for per-dimension omegas): the
  Admin or DeepNet skip-branch scale of each sub-layer;
- ``gnorm/<stack>.<layer>``: the norm of the layer's gradient in this update (before
  clipping, in the units of fairseq's own ``gnorm``);
- ``output_change/decoder`` and ``output_change/encoder``: ``mean |F(x, W_after) -
  F(x, W_before)|^2`` over the elements of the decoder's last hidden states and the encoder's
  output on the fixed batch, the change this one update made; ``output_change_per_lr2/...``
  is the same divided by the squared learning rate of the update (Adam moves every weight by
  about the learning rate, so this is the model's sensitivity to one step, comparable across
  the warm-up).

They are logged with fairseq's own metrics, so they appear in the ``train_inner`` JSON lines
of the log interval that holds the update and in TensorBoard (``--tensorboard-logdir``),
under these names.

Early warnings (``WARNING`` lines of the training log, from rank 0): the reference range of a
quantity is what it held over the warm-up (``--warmup-updates``), from the measurement at
which the learning rate reached a tenth of its peak (``--lr``), and at least
:data:`REFERENCE_POINTS` measurements; during the warm-up a value far outside the range of
the values before it counts too (see :class:`Reference`). A warning names the layer and the
quantity when:

- the output change per squared learning rate leaves that range by more than
  ``--admin-monitor-factor`` (default :data:`DEFAULT_FACTOR`) up or down;
- a sub-layer's branch-to-skip ratio ``share / (1 - share)`` does the same (a branch that
  takes over the sub-layer's output, or one that stops contributing);
- the gradient of a layer is not finite (named at every such update; with fp16 a gradient
  overflow is routine and the loss scaler skips the update, so it becomes a warning after
  :data:`OVERFLOW_STREAK` overflows in a row);
- validation stalled by the compare step's rule (:func:`admin_fairseq.curves.stalled_runs`:
  the validation loss fell by less than ``STALL_GAIN`` over the second half of the run so far
  and is not ``BASELINE_MARGIN`` below the loss of a model that knows only the target tokens'
  frequencies), checked from twice the warm-up updates on, so that the second half is past
  the warm-up.

Each warning is given once, and again only after the quantity came back into its range.
``--admin-monitor-stop`` ends the run on the first warning, with exit status
:data:`EXIT_UNSTABLE` on every worker (no checkpoint is written: the last one saved before
the warning is the one to go back to). The reference range and the validation curve are
kept in the checkpoints, so a resumed run compares against the same early range.

The package, by job: the measuring is here (:class:`StabilityMonitor`); the warning rules
are in :mod:`~admin_fairseq.monitor.rules`; how fairseq's trainer runs the monitor is in
:mod:`~admin_fairseq.monitor.trainer_hooks` (:func:`install`, called by a
``transformer_admin`` model built with the monitor on, once per process); and
``python -m admin_fairseq.monitor``, the replay of a run's warnings, is ``__main__``.
"""

import logging
import math
import re
import sys

import torch

from admin_fairseq import curves
from admin_fairseq.monitor.rules import (  # noqa: F401  the rules, as the monitor's own names
    CHECK_AFTER, DEFAULT_FACTOR, REFERENCE_LR_SHARE, REFERENCE_POINTS, SHOWN_DEPARTURES, Ranges, Reference, replay)
from admin_fairseq.monitor.trainer_hooks import install, of  # noqa: F401

logger = logging.getLogger(__name__)

#: updates between two measurements when the monitor is on without an interval
DEFAULT_INTERVAL = 100
#: sentences of the fixed batch the monitor measures on
FIXED_SENTENCES = 8
#: fp16 gradient overflows in a row that make a warning
OVERFLOW_STREAK = 3
#: exit status of every worker of a run stopped by ``--admin-monitor-stop``
EXIT_UNSTABLE = 3
#: metrics come after fairseq's own in the log lines
PRIORITY = 5000

SUBLAYERS = {"encoder": ("self_attn", "ffn"), "decoder": ("self_attn", "cross_attn", "ffn")}
_RESIDUAL_NAMES = {"self_attn_residual": "self_attn", "encoder_attn_residual": "cross_attn",
                   "ffn_residual": "ffn"}  # fmt: skip
_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.")


def _significant(value, digits=4):
    """``value`` rounded to ``digits`` significant digits (non-finite values kept)."""
    return float(f"{value:.{digits}g}") if math.isfinite(value) else value


def layer_name(stack, index, layers):
    """``encoder.03``: the index padded to the stack's width, so that names sort by depth."""
    return f"{stack}.{index:0{len(str(max(layers - 1, 0)))}d}"


def check_args(args):
    """Validate the monitor's flags (``ValueError`` naming the flag)."""
    interval = getattr(args, "admin_monitor_interval", 0) or 0
    if interval < 0:
        raise ValueError(f"--admin-monitor-interval must be 0 (off) or a number of updates; got {interval}")
    factor = getattr(args, "admin_monitor_factor", DEFAULT_FACTOR)
    if not (factor > 1 and math.isfinite(factor)):
        raise ValueError(f"--admin-monitor-factor must be a finite number above 1; got {factor}")
    if getattr(args, "admin_monitor_stop", False) and not interval:
        raise ValueError("--admin-monitor-stop stops on the monitor's warnings; it needs "
                         f"--admin-monitor-interval N (e.g. {DEFAULT_INTERVAL})")  # fmt: skip
    if interval and getattr(args, "ddp_backend", None) == "fully_sharded":
        raise ValueError("--admin-monitor-interval does not support --ddp-backend fully_sharded "
                         "(rank 0 measures its own full copy of the model); use another --ddp-backend")  # fmt: skip


class StabilityMonitor:
    """The monitor of one model in one training process (see the module's note)."""

    def __init__(self, model, interval, factor=DEFAULT_FACTOR, stop=False):
        self.model, self.interval, self.factor, self.stop = model, interval, factor, stop
        self.fixed = None  # the fixed batch (net_input of FIXED_SENTENCES sentences), rank 0
        self.ranges = Ranges(factor)  # the early range of every measured quantity
        self.valid = []  # [(update, validation loss)]
        self.warned_stall = False
        self.overflows = 0
        self.logged_keys = []  # in the order first logged (the first is checked for staleness)
        self._logged = set()
        self._grads = None  # set while an update is measured
        self._frequency_loss = False  # not computed yet
        self.stop_requested = None  # the warning that asks for the stop

    # ------------------------------------------------------------------ measurements
    def layers(self):
        """``[(stack, index, layer module)]`` of the encoder and decoder."""
        found = []
        for stack in ("encoder", "decoder"):
            for index, layer in enumerate(getattr(self.model, stack).layers):
                found.append((stack, index, layer))
        return found

    def _fix_batch(self, samples, device):
        for sample in samples:
            net_input = sample.get("net_input") if isinstance(sample, dict) else None
            if not net_input or net_input.get("src_tokens") is None or not len(net_input["src_tokens"]):
                continue
            keep = slice(0, FIXED_SENTENCES)
            self.fixed = {key: net_input[key][keep].to(device)
                          for key in ("src_tokens", "src_lengths", "prev_output_tokens")}  # fmt: skip
            return

    @torch.no_grad()
    def forward_fixed(self, record_shares=False):
        """``(encoder output, decoder hidden states, shares)`` on the fixed batch, in
        evaluation mode; ``shares`` maps a sub-layer's name to ``(Var[f], Var[out])``."""
        model = self.model
        shares, captured, restore = {}, {}, []
        if record_shares:
            for stack, index, layer in self.layers():
                name = layer_name(stack, index, len(getattr(model, stack).layers))
                calls = []

                def reset(module, args, calls=calls):
                    calls.clear()

                def recording(x, residual, calls=calls, name=name, original=layer.residual_connection):
                    out = original(x, residual)  # fairseq passes the branch output first
                    calls.append(None)
                    shares[(name, len(calls))] = (x.float().var(), out.float().var())
                    return out

                restore.append((layer, layer.register_forward_pre_hook(reset)))
                layer.residual_connection = recording

        def keep_encoder_out(module, args, output):
            captured["encoder"] = output["encoder_out"][0]

        handle = model.encoder.register_forward_hook(keep_encoder_out)
        was_training = model.training
        model.eval()
        try:
            features, _ = model(**self.fixed, features_only=True)
        finally:
            model.train(was_training)
            handle.remove()
            for layer, hook in restore:
                hook.remove()
                del layer.residual_connection  # back to the class's method
        named = {}
        if record_shares:
            calls_per_layer = {}
            for (name, k) in shares:
                calls_per_layer[name] = max(calls_per_layer.get(name, 0), k)
            for (name, k), value in shares.items():
                # a decoder layer without cross-attention (or without encoder output) has two
                kinds = SUBLAYERS[name.split(".")[0]] if calls_per_layer[name] == 3 else ("self_attn", "ffn")
                named[f"{name}.{kinds[k - 1]}"] = value
        return captured["encoder"].float(), features.float(), named

    def omegas(self):
        """``{sub-layer name: omega tensor}`` of the Admin/DeepNet residuals (none for fairseq's
        own layers)."""
        found = {}
        for stack, index, layer in self.layers():
            name = layer_name(stack, index, len(getattr(self.model, stack).layers))
            for attribute, kind in _RESIDUAL_NAMES.items():
                residual = getattr(layer, attribute, None)
                if residual is not None and hasattr(residual, "omega"):
                    found[f"{name}.{kind}"] = residual.omega.detach()
        return found

    def layer_gradient_norms(self):
        """``[(layer name, norm of its gradient)]`` as a tensor of norms (one device sync
        later, not here) and the names."""
        groups = {}
        counts = {"encoder": len(self.model.encoder.layers), "decoder": len(self.model.decoder.layers)}
        for name, param in self.model.named_parameters():
            if param.grad is None:
                continue
            name = name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")
            match = _LAYER.match(name)
            if not match:
                continue
            key = layer_name(match.group(1), int(match.group(2)), counts[match.group(1)])
            groups.setdefault(key, []).append(torch.linalg.vector_norm(param.grad, dtype=torch.float32))
        names = list(groups)
        if not names:
            return [], None
        norms = torch.stack([torch.linalg.vector_norm(torch.stack(v)) for v in groups.values()])
        return names, norms

    # ------------------------------------------------------------------ the training loop
    def around_train_step(self, trainer, train_step, samples, raise_oom):
        """fairseq's ``Trainer.train_step`` with the measurements around it."""
        before = trainer.get_num_updates()
        update = before + 1
        due = update % self.interval == 0
        rank0 = trainer.data_parallel_rank == 0
        measured = None
        self._drop_stale_meters()
        if due and rank0:
            if self.fixed is None:
                self._fix_batch(samples, next(self.model.parameters()).device)
            if self.fixed is not None:
                lr = trainer.get_lr()
                enc0, dec0, shares = self.forward_fixed(record_shares=True)
                measured = {"lr": lr, "enc": enc0, "dec": dec0, "shares": shares}
                self._grads = {}
        try:
            result = train_step(samples, raise_oom)
        finally:
            grads, self._grads = self._grads, None
        if measured is not None:
            stepped = trainer.get_num_updates() > before
            self._record(trainer, update, measured, grads, stepped)
        if due and self.stop:
            self._maybe_stop(trainer)
        return result

    def around_clip_grad_norm(self, trainer, clip_grad_norm, clip_norm):
        """fairseq's ``Trainer.clip_grad_norm``: the per-layer gradient norms of a measured
        update, and the layers whose gradient is not finite."""
        names, norms = self.layer_gradient_norms() if self._grads is not None else ([], None)
        try:
            total = clip_grad_norm(clip_norm)
        except OverflowError:  # fp16: the loss scaler skips this update
            self._non_finite(trainer, fp16=True)
            raise
        finite = bool(torch.isfinite(torch.as_tensor(total)).all())
        if not finite:
            self._non_finite(trainer, fp16=bool(trainer.cfg.common.amp))
        else:
            self.overflows = 0
        if norms is not None and finite:
            raw_total = torch.linalg.vector_norm(norms)
            scale = torch.as_tensor(total, dtype=torch.float32, device=norms.device) / raw_total if raw_total > 0 else 1.0
            self._grads.update(zip(names, (norms * scale).tolist()))
        return total

    def _non_finite(self, trainer, fp16):
        names, norms = self.layer_gradient_norms()
        bad = [n for n, v in zip(names, (norms.tolist() if norms is not None else [])) if not math.isfinite(v)]
        where = (f"in {len(bad)} of {len(names)} layers: {', '.join(bad[:6])}"
                 f"{', ...' if len(bad) > 6 else ''}") if bad else "outside the encoder and decoder layers"  # fmt: skip
        update = trainer.get_num_updates() + 1
        if fp16:
            self.overflows += 1
            if self.overflows < OVERFLOW_STREAK:
                if trainer.data_parallel_rank == 0:
                    logger.info(f"admin monitor: update {update}: fp16 gradient overflow {where} "
                                "(the loss scaler skips the update and lowers the scale)")  # fmt: skip
                return
            message = (f"update {update}: {self.overflows} fp16 gradient overflows in a row, the "
                       f"last {where}; the loss scale keeps falling (fairseq stops at its minimum)")  # fmt: skip
        else:
            message = f"update {update}: the gradient is not finite {where}"
        self._warn(trainer, message, everywhere=True)

    def _record(self, trainer, update, measured, grads, stepped):
        from fairseq.logging import metrics

        values = {}
        for name, (branch, out) in measured["shares"].items():
            values[f"share/{name}"] = branch / out
        for name, omega in self.omegas().items():
            omega = omega.float()
            if omega.numel() == 1:
                values[f"omega/{name}"] = omega.reshape(())
            else:
                values[f"omega/{name}"] = omega.mean()
                values[f"omega_min/{name}"] = omega.min()
                values[f"omega_max/{name}"] = omega.max()
        lr = measured["lr"]
        if stepped:
            enc1, dec1, _ = self.forward_fixed()
            for side, before, after in (("decoder", measured["dec"], dec1), ("encoder", measured["enc"], enc1)):
                values[f"output_change/{side}"] = ((after - before) ** 2).mean()
        keys = list(values)
        # one copy to the host for all of them (each .item() would wait for the device)
        numbers = torch.stack([v.reshape(()).float() for v in values.values()]).tolist() if keys else []
        values = dict(zip(keys, numbers))
        if stepped and lr > 0:
            for side in ("decoder", "encoder"):
                values[f"output_change_per_lr2/{side}"] = values[f"output_change/{side}"] / lr**2
        values.update({f"gnorm/{name}": norm for name, norm in (grads or {}).items()})
        for key, value in values.items():
            metrics.log_scalar(key, _significant(value), priority=PRIORITY)
            if key not in self._logged:
                self._logged.add(key)
                self.logged_keys.append(key)
        self._check(trainer, update, lr, values)

    def _drop_stale_meters(self):
        """Remove the monitor's meters that fairseq reset at its last log line and that no
        measurement filled since, so that a log line without a measurement has no empty
        (null) entries for them."""
        if not self.logged_keys:
            return
        from fairseq.logging import metrics

        for name in ("train_inner", "train"):
            meters = metrics.get_meters(name)
            if meters is None:
                continue
            first = meters.get(self.logged_keys[0])
            if first is not None and getattr(first, "count", 1) == 0:
                stale = {key for key in self.logged_keys if getattr(meters.get(key), "count", 1) == 0}
                for key in stale:
                    del meters[key]
                # fairseq's MetersDict keeps its order in a list of its own
                meters.priorities[:] = [entry for entry in meters.priorities if entry[2] not in stale]

    # ------------------------------------------------------------------ warnings
    @staticmethod
    def _warmup(trainer):
        """The warm-up updates of the learning-rate schedule (0 without one)."""
        scheduler = trainer.cfg.lr_scheduler
        return int((scheduler.get("warmup_updates", 0) if hasattr(scheduler, "get") else 0) or 0)

    def _check(self, trainer, update, lr, values):
        peak = max(trainer.cfg.optimization.lr) if trainer.cfg.optimization.lr else 0.0
        for message in self.departures(update, lr, values, self._warmup(trainer), peak):
            self._warn(trainer, message)

    def departures(self, update, lr, values, warmup, peak):
        """The warnings of one measurement against the early ranges (:class:`Ranges`)."""
        return self.ranges.departures(update, lr, values, warmup, peak)

    def after_validate(self, trainer, valid_losses):
        """fairseq-train's ``validate``: the validation curve and the compare step's stall rule."""
        if not valid_losses or valid_losses[0] is None or trainer.cfg.checkpoint.best_checkpoint_metric != "loss":
            return
        update = trainer.get_num_updates()
        self.valid = [(u, v) for u, v in self.valid if u < update] + [(update, float(valid_losses[0]))]
        warmup = self._warmup(trainer)
        # not while the second half of the run so far still holds warm-up updates
        if trainer.data_parallel_rank == 0 and not self.warned_stall and update >= 2 * warmup:
            baseline = self._baseline(trainer)
            if "run" in curves.stalled_runs({"run": self.valid}, baseline):
                self.warned_stall = True
                self._warn(trainer, f"update {update}: validation stalled: over the second half "
                           f"of the run so far the validation loss fell by less than {curves.STALL_GAIN} "
                           f"bits, and its best ({min(v for _, v in self.valid):.3f}) is less than "
                           f"{curves.BASELINE_MARGIN} below {baseline:.3f}, the loss of a model "
                           "that knows only the target tokens' frequencies")  # fmt: skip
        if self.stop:
            self._maybe_stop(trainer)

    def _baseline(self, trainer):
        if self._frequency_loss is False:
            self._frequency_loss = None
            try:
                task = trainer.task.cfg
                data = str(task.data).split(":")[0]
                eps = float(getattr(trainer.criterion, "eps", 0.0) or 0.0)
                self._frequency_loss = curves.frequency_loss(data, task.source_lang, task.target_lang, eps)
            except Exception as err:  # a task without these files: no stall rule
                logger.info(f"admin monitor: no frequency baseline for the stall rule ({err})")
        return self._frequency_loss

    def _warn(self, trainer, message, everywhere=False):
        """A warning line (from rank 0 only, unless every worker decided it alike), and the
        stop request of ``--admin-monitor-stop``."""
        if everywhere or trainer.data_parallel_rank == 0:
            if trainer.data_parallel_rank == 0:
                logger.warning(f"admin monitor: {message}")
            if self.stop and self.stop_requested is None:
                self.stop_requested = message
                if everywhere:
                    self._exit(trainer)

    def _maybe_stop(self, trainer):
        from admin_fairseq.resilience import _any

        if _any(trainer, self.stop_requested is not None):
            self._exit(trainer)

    def _exit(self, trainer):
        if trainer.data_parallel_rank == 0:
            logger.error(f"admin monitor: stopping the run (--admin-monitor-stop) on: "
                         f"{self.stop_requested or 'another worker'}; exit status {EXIT_UNSTABLE}. "
                         "No checkpoint was written for this update")  # fmt: skip
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(EXIT_UNSTABLE)

    # ------------------------------------------------------------------ checkpoints
    @property
    def references(self):
        return self.ranges.references

    def state(self):
        return {"references": self.ranges.state(), "valid": [list(p) for p in self.valid],
                "warned_stall": self.warned_stall}  # fmt: skip

    def load(self, state):
        if not isinstance(state, dict):
            return
        self.ranges.load(state.get("references", {}))
        self.valid = [(int(u), float(v)) for u, v in state.get("valid", [])]
        self.warned_stall = bool(state.get("warned_stall", False))


