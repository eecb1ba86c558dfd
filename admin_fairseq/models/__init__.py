"""fairseq models of admin_fairseq. fairseq imports this package when it loads the plugin
(``--user-dir``): that is where the plugin registers itself (:func:`admin_fairseq.plugin.load`)."""

from admin_fairseq import plugin

plugin.load()
