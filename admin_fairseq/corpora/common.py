"""What every corpus shares: the :class:`Source` interface, the training-pair cleaning, and
the writing of the split files and checksums."""

import hashlib
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from admin_fairseq import atomic
from admin_fairseq.recipes import RecipeError

MAX_WORDS = 250  # longer training lines are dropped (either side), as fairseq's WMT scripts do
MAX_RATIO = 1.5  # and pairs whose word counts differ by more than this factor

#: characters that Python's text readers (fairseq-preprocess, sacreBLEU, str.splitlines) take
#: as the end of a line; inside a line of a split they would break it in two there
LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
#: other control characters (NUL, backspace, escape, DEL, ...): invisible, and NUL ends a
#: string in sentencepiece's C++ reader; removed, and counted like the line breaks
CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f]")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Options:
    """The prepare step's options for a corpus (``None``: not given). Each corpus refuses
    the ones that do not apply to it, naming them."""

    raw_dir: Optional[str] = None
    offline: bool = False
    vocab_size: Optional[int] = None
    train_size: Optional[int] = None
    valid_size: Optional[int] = None
    test_size: Optional[int] = None
    text: Optional[dict] = None  # --corpus text: {"src", "tgt", "train", "valid", "test"}


@dataclass(frozen=True)
class Source:
    """One corpus, ready to be written: the pair's languages, the joint sentencepiece size,
    the settings that ``prepare.json`` records (a folder prepared with other settings is
    started afresh), and ``write(out_dir, log)``, which writes the six files
    ``{train,valid,test}.{src,tgt}`` (cleaned text; ``test.*`` the untouched reference) and
    ``inputs.json`` (the sha256 of every file it read)."""

    src: str
    tgt: str
    vocab_size: int
    settings: dict
    write: Callable
    what: str  # the line that step 1 of the preparation prints
    encoding_note: str = ""  # how the sentencepiece step sees the text, when it matters
    inputs: tuple = ()  # the user's files it reads, which no output may overwrite


SPLITS = ("train", "valid", "test")


def split_files(src, tgt):
    """The six files a corpus writes: ``{train,valid,test}.{src,tgt}``."""
    return [f"{split}.{lang}" for split in SPLITS for lang in (src, tgt)]


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_inputs(out_dir, sums):
    """``inputs.json``: ``{file name: sha256}`` of what the corpus was made from."""
    atomic.write_json(Path(out_dir) / "inputs.json", sums)


def clean_pair(src_line, tgt_line):
    """Normalised ``(src, tgt)`` or ``None`` when the training pair should be dropped."""
    s, t = _SPACES.sub(" ", src_line).strip(), _SPACES.sub(" ", tgt_line).strip()
    if not s or not t:
        return None
    ns, nt = len(s.split()), len(t.split())
    if ns > MAX_WORDS or nt > MAX_WORDS or max(ns, nt) > MAX_RATIO * min(ns, nt):
        return None
    return s, t


def write_lines(path, lines, log=print):
    """Write one line per item (under a temporary name, then renamed); a line-break character
    inside an item becomes a space, so that every reader sees the same lines, and the
    number of such lines is printed."""
    path, mended, controlled = Path(path), 0, 0

    def mend(line):
        nonlocal mended, controlled
        one, breaks = LINE_BREAKS.subn(" ", line)
        one, controls = CONTROLS.subn("", one)
        mended += breaks > 0
        controlled += controls > 0
        return one

    n = atomic.write_lines(path, map(mend, lines))
    if mended:
        log(f"  {path.name}: {mended:,} line(s) held a line-break character (\\r, U+2028, ...) "
            "inside; each became a space")
    if controlled:
        log(f"  {path.name}: {controlled:,} line(s) held a control character (NUL, escape, ...); "
            "each was removed")
    return n


def write_splits(out_dir, src, tgt, splits, log=print):
    """``{out_dir}/{split}.{src,tgt}`` from ``{split: [(src line, tgt line)]}``."""
    for split, pairs in splits.items():
        write_lines(Path(out_dir) / f"{split}.{src}", (s for s, _ in pairs), log)
        write_lines(Path(out_dir) / f"{split}.{tgt}", (t for _, t in pairs), log)


def download(url, dest, log):
    """Fetch ``url`` to ``dest`` (via ``dest.part``), printing progress every 5%."""
    part = dest.with_name(dest.name + ".part")
    log(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, shown = 0, -5
            for block in iter(lambda: response.read(1 << 22), b""):
                out.write(block)
                done += len(block)
                if total and 100 * done // total >= shown + 5:
                    shown = 100 * done // total
                    log(f"  {dest.name}: {shown}% of {total / 1e6:.0f} MB")
    except OSError as err:
        raise RecipeError(
            f"could not download {url}: {err}. Download it by hand into {dest.parent} and "
            "re-run with --raw-dir pointing there (add --offline to forbid downloads)"
        ) from err
    os.replace(part, dest)
