"""WMT'14 En-Fr and WMT'17 En-De: the training corpora fairseq's WMT preparation scripts
fetch, concatenated and cleaned, with sacreBLEU's test sets for validation and test.

    python -m admin_fairseq.recipes.prepare --corpus wmt17-en-de --out data/wmt17-en-de
    python -m admin_fairseq.recipes.prepare --corpus wmt14-en-fr --out data/wmt14-en-fr \
        --raw-dir /datasets/wmt-raw --offline

The archives are downloaded into ``--raw-dir`` (default ``{out}/raw``) unless they, or their
extracted text files, are there already. Training pairs with more than 250 words a side or a
length ratio above 1.5 are dropped; how many per corpus is in ``cleaning.json``.
"""

import gzip
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from admin_fairseq import atomic
from admin_fairseq.corpora.common import (MAX_RATIO, MAX_WORDS, Source, clean_pair, download, sha256_file,
                                          write_inputs, write_lines)
from admin_fairseq.corpora.text import read_lines
from admin_fairseq.recipes import RecipeError

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


#: The training corpora of the WMT tasks, as fairseq's WMT preparation scripts fetch them.
TASKS = {
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
            download(corpus.url, archive, log)
    if missing:
        raise RecipeError(
            f"--offline: {raw_dir} lacks {len(missing)} file(s): " + "; ".join(missing) +
            ". Put the archives there (or their extracted text files) and re-run"
        )


def open_member(raw_dir, corpus, lang):
    """A binary stream of one side of ``corpus``: an extracted file in ``raw_dir`` if there is
    one, else the member of the archive whose base name matches. Read it with
    :func:`decoded`, line by line at ``\\n``."""
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


def decoded(raw_line):
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


def build_training_text(task, raw_dir, out_dir, log=print):
    """Concatenate and clean all training corpora into ``train.{src,tgt}``."""
    src_path, tgt_path = out_dir / f"train.{task.src}", out_dir / f"train.{task.tgt}"
    kept_total, summary = 0, {}
    with atomic.replacing(src_path) as src_tmp, atomic.replacing(tgt_path) as tgt_tmp, \
         open(src_tmp, "w", encoding="utf-8", newline="\n") as fs, \
         open(tgt_tmp, "w", encoding="utf-8", newline="\n") as ft:  # fmt: skip
        for corpus in task.train:
            with open_member(raw_dir, corpus, task.src) as s_in, \
                 open_member(raw_dir, corpus, task.tgt) as t_in:  # fmt: skip
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
                    s_line, t_line = decoded(s_raw), decoded(t_raw)
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
                sums[path.name] = sha256_file(path)
    for split in ("valid", "test"):
        for lang in (task.src, task.tgt):
            path = raw_dir / f"{split}.{lang}"
            if path.exists():
                sums[path.name] = sha256_file(path)
    return sums


def test_set_lines(name, task, raw_dir, split, offline):
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
    lines = [read_lines(Path(p)) for p in paths]  # lines end at \n only
    if len(lines[0]) != len(lines[1]):
        raise RecipeError(
            f"{split} set: {paths[0]} has {len(lines[0])} lines but {paths[1]} has "
            f"{len(lines[1])}; source and reference must align line by line"
        )
    return lines


def source(name, options):
    """The :class:`~admin_fairseq.corpora.common.Source` of the WMT task ``name``."""
    if options.train_size or options.valid_size or options.test_size:
        raise RecipeError("--train-size/--valid-size/--test-size apply to the Bible corpora only")
    task = TASKS[name]
    vocab_size = options.vocab_size or task.vocab_size
    raw_dir, offline = Path(options.raw_dir), options.offline
    settings = {"corpus": name, "vocab_size": vocab_size, "max_words": MAX_WORDS,
                "max_ratio": MAX_RATIO, "valid": task.valid, "test": task.test}  # fmt: skip

    def write(out_dir, log=print):
        fetch_archives(task, raw_dir, offline, log)
        kept = build_training_text(task, raw_dir, out_dir, log)
        for split, test_set in (("valid", task.valid), ("test", task.test)):
            src_lines, tgt_lines = test_set_lines(test_set, task, raw_dir, split, offline)
            write_lines(out_dir / f"{split}.{task.src}", src_lines, log)
            write_lines(out_dir / f"{split}.{task.tgt}", tgt_lines, log)
            log(f"  {split}: sacreBLEU {test_set}, {len(src_lines):,} lines")
        log(f"  train: {kept:,} pairs after cleaning")
        write_inputs(out_dir, input_checksums(task, raw_dir))

    return Source(task.src, task.tgt, vocab_size, settings, write,
                  what=f"fetching and cleaning {name} from {raw_dir}")  # fmt: skip
