"""Data preparation: the Bible corpus and sentencepiece."""
