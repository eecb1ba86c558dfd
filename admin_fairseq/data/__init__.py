"""Sentencepiece (spm.py), and the earlier command name of the Bible preparation (pipeline.py);
the corpora themselves are in :mod:`admin_fairseq.corpora`."""
