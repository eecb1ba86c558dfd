"""How fairseq's trainer runs the monitor: wrappers around four ``Trainer`` methods and
fairseq-train's ``validate``, installed once per process by a model built with the monitor on
(fairseq has no hook between the backward pass and the optimizer step, nor around a
checkpoint's extra state). Each wrapper returns at once to fairseq's own code for a model
without a monitor.
"""

import sys

def of(trainer):
    """The monitor of ``trainer``'s model, or None."""
    model = trainer.get_model() if hasattr(trainer, "get_model") else None
    return getattr(model, "admin_monitor", None)


_installed = False


def install():
    """Wrap fairseq's ``Trainer.train_step``, ``clip_grad_norm``, ``save_checkpoint``,
    ``load_checkpoint`` and fairseq-train's ``validate``. Idempotent; each wrapper calls
    fairseq's own method alone when the model has no monitor."""
    global _installed
    if _installed:
        return
    _installed = True
    from fairseq.trainer import Trainer

    train_step, clip_grad_norm = Trainer.train_step, Trainer.clip_grad_norm
    save_checkpoint, load_checkpoint = Trainer.save_checkpoint, Trainer.load_checkpoint

    def monitored_train_step(self, samples, raise_oom=False):
        monitor = of(self)
        if monitor is None or getattr(monitor, "_inside", False):  # AMP retries recurse
            return train_step(self, samples, raise_oom)
        _wrap_validate()
        monitor._inside = True
        try:
            return monitor.around_train_step(self, lambda s, r: train_step(self, s, r), samples, raise_oom)
        finally:
            monitor._inside = False

    def monitored_clip_grad_norm(self, clip_norm):
        monitor = of(self)
        if monitor is None:
            return clip_grad_norm(self, clip_norm)
        return monitor.around_clip_grad_norm(self, lambda c: clip_grad_norm(self, c), clip_norm)

    def saving(self, filename, extra_state):
        monitor = of(self)
        if monitor is not None and isinstance(extra_state, dict):
            extra_state = {**extra_state, "admin_monitor": monitor.state()}
        return save_checkpoint(self, filename, extra_state)

    def loading(self, *args, **kwargs):
        extra_state = load_checkpoint(self, *args, **kwargs)
        monitor = of(self)
        if monitor is not None and isinstance(extra_state, dict):
            monitor.load(extra_state.get("admin_monitor"))
        return extra_state

    Trainer.train_step = monitored_train_step
    Trainer.clip_grad_norm = monitored_clip_grad_norm
    Trainer.save_checkpoint = saving
    Trainer.load_checkpoint = loading


def _wrap_validate():
    """fairseq-train's ``validate`` (its module is imported by then), once."""
    train_cli = sys.modules.get("fairseq_cli.train")
    if train_cli is None or getattr(train_cli.validate, "admin_monitor", False):
        return
    validate = train_cli.validate

    def monitored_validate(cfg, trainer, task, epoch_itr, subsets):
        valid_losses = validate(cfg, trainer, task, epoch_itr, subsets)
        monitor = of(trainer)
        if monitor is not None:
            monitor.after_validate(trainer, valid_losses)
        return valid_losses

    monitored_validate.admin_monitor = True
    train_cli.validate = monitored_validate
