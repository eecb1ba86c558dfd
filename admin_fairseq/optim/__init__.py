"""Optimizers the published recipes need that fairseq does not ship (registered by
:func:`admin_fairseq.plugin.load`)."""
