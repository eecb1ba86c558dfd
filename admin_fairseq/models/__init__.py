"""fairseq models registered by admin_fairseq."""

from admin_fairseq.models import transformer_admin  # noqa: F401  registers transformer_admin*
