"""Every corpus the prepare step knows, behind one interface, in one place.

- ``wmt14-en-fr``, ``wmt17-en-de``: :mod:`admin_fairseq.corpora.wmt`
- ``iwslt14-de-en``: :mod:`admin_fairseq.corpora.iwslt14`
- ``bible-en-fr`` and the other Bible pairs: :mod:`admin_fairseq.corpora.bible`
- ``text``, the user's own files: :mod:`admin_fairseq.corpora.text`

:func:`source` gives each as a :class:`~admin_fairseq.corpora.common.Source`: the pair's
languages, the sentencepiece size, the settings to record, and how to write the six split
files. The prepare step (:mod:`admin_fairseq.recipes.prepare`) does the rest the same way for
all of them: the joint sentencepiece model, fairseq's binaries, and ``counts.json``.
"""

import dataclasses
from pathlib import Path

from admin_fairseq.corpora import bible, iwslt14, text, wmt
from admin_fairseq.corpora.common import Options, Source
from admin_fairseq.recipes import RecipeError

NAMES = (*wmt.TASKS, iwslt14.NAME, *bible.CORPORA, "text")

__all__ = ["NAMES", "Options", "Source", "source"]


def source(corpus, options, out_dir, log=print):
    """The :class:`Source` of ``corpus`` with the prepare step's ``options`` (an
    :class:`Options`); a RecipeError names an option that does not apply or a corpus that
    does not exist. Nothing is written; the user's own files are read and checked here."""
    given_text = sorted(k for k, v in (options.text or {}).items() if v)
    if given_text and corpus != "text":
        verb = "applies" if len(given_text) == 1 else "apply"
        raise RecipeError(f"--{' --'.join(given_text)} {verb} to --corpus text only")
    if corpus in wmt.TASKS or corpus == iwslt14.NAME:
        raw_dir = options.raw_dir or Path(out_dir) / "raw"
        options = dataclasses.replace(options, raw_dir=str(raw_dir))
        if corpus == iwslt14.NAME:
            return iwslt14.source(options)
        return wmt.source(corpus, options)
    if corpus in bible.CORPORA:
        return bible.source(corpus, options)
    if corpus == "text":
        return text.source(options, log)
    raise RecipeError(f"unknown --corpus {corpus!r}; choose from {', '.join(NAMES)}")
