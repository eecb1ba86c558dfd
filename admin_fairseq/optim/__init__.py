"""Optimizers the published recipes need that fairseq does not ship (registered on import)."""

from admin_fairseq.optim import radam  # noqa: F401
