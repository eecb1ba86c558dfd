"""fairseq modules (layers) used by admin_fairseq's models."""
