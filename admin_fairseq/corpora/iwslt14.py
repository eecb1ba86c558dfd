"""IWSLT'14 German-English, split as fairseq's ``examples/translation/prepare-iwslt14.sh``.

    python -m admin_fairseq.recipes.prepare --corpus iwslt14-de-en --out data/iwslt14-de-en \
        --raw-dir /datasets/iwslt14 --offline

reads the TED archive of the IWSLT 2014 evaluation campaign, ``de-en.tgz`` (or the folder
``de-en/`` it unpacks to) from ``--raw-dir``, and makes the splits everybody reports on:

- training text: ``de-en/train.tags.de-en.{de,en}`` without the lines that hold ``<url>``,
  ``<talkid>`` or ``<keywords>``, with the ``<title>``/``<description>`` tags removed;
  Moses-tokenized (sacremoses, with the Moses tokenizer's default escaping), pairs outside
  1-175 tokens or with a length ratio above 1.5 dropped (``clean-corpus-n.perl``), lower-cased;
- validation: every 23rd line of that text (lines 23, 46, ...); training: the other lines;
- test: the ``<seg id=...>`` lines of dev2010, TEDX dev2012, tst2010, tst2011 and tst2012,
  concatenated in that order, tokenized and lower-cased the same way (curly apostrophes
  straightened first, as the shell script does).

One deviation: a joint sentencepiece model of 10,000 pieces on the tokenized text replaces
fairseq's 10,000 BPE merges (subword-nmt). Decoding the pieces gives back the tokenized,
lower-cased text, so BLEU is computed on the same form as the published numbers (the
"tok. BLEU" of the evaluation step, on the text as it is).
"""

import re
import tarfile
from pathlib import Path

from admin_fairseq.corpora.common import Source, download, sha256_file, write_inputs, write_splits
from admin_fairseq.recipes import RecipeError

NAME = "iwslt14-de-en"
SRC, TGT = "de", "en"
ARCHIVE = "de-en.tgz"
#: where the archive was published (the WIT3 site, now gone) and a copy fairseq's users fetch
URLS = ("https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz",
        "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz")  # fmt: skip
TRAIN_FILE = "train.tags.de-en.{lang}"
TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
             "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012")  # fmt: skip
VALID_EVERY = 23
MIN_TOKENS, MAX_TOKENS, MAX_RATIO = 1, 175, 1.5
VOCAB_SIZE = 10000
#: how the text of the splits is written (recorded in the settings; the evaluation reads it)
TEXT_FORM = "moses-tokenized, lower-cased"

_DROPPED = ("<url>", "<talkid>", "<keywords>")
_TAGS = re.compile(r"</?(title|description)>")
_SEG = re.compile(r'<seg id="[0-9]*">\s*')
_SEG_END = re.compile(r"\s*</seg>\s*")


class Archive:
    """The members of ``de-en.tgz`` by base name, read from the archive or from the folder
    ``de-en/`` it unpacks to (either in ``raw_dir``)."""

    def __init__(self, raw_dir):
        self.raw_dir = Path(raw_dir)
        self.folder = self.raw_dir / "de-en"
        self.archive = self.raw_dir / ARCHIVE
        self._tar = None
        if not self.folder.is_dir():
            if not self.archive.exists():
                raise RecipeError(
                    f"{self.archive} is missing (and there is no unpacked {self.folder}). Put the "
                    f"IWSLT'14 TED archive there: {URLS[0]} (the original address, offline now), "
                    f"or the copy at {URLS[1]}"
                )
            try:
                self._tar = tarfile.open(self.archive)
                self._members = {Path(m.name).name: m for m in self._tar.getmembers() if m.isfile()}
            except (tarfile.TarError, OSError, EOFError) as err:
                raise RecipeError(f"{self.archive} is not a readable tar archive ({err}); "
                                  "download it again") from None  # fmt: skip

    @property
    def where(self):
        return self.folder if self._tar is None else self.archive

    def lines(self, name):
        """The lines of member ``name`` (decoded as UTF-8, line ends removed)."""
        if self._tar is None:
            path = self.folder / name
            if not path.exists():
                raise RecipeError(f"{path} is missing; {self.folder} is not a complete unpacked "
                                  f"{ARCHIVE}")  # fmt: skip
            raw = open(path, "rb")
        else:
            if name not in self._members:
                raise RecipeError(f"{self.archive} has no member {name}; is it the IWSLT'14 "
                                  f"de-en archive ({URLS[0]})?")  # fmt: skip
            raw = self._tar.extractfile(self._members[name])
        lines = []
        with raw:
            for number, line in enumerate(raw, 1):
                try:
                    lines.append(line.decode("utf-8").rstrip("\r\n"))
                except UnicodeDecodeError as err:
                    raise RecipeError(f"{self.where}: {name}, line {number} is not UTF-8 "
                                      f"({line[max(0, err.start - 8):err.end + 8]!r})") from None  # fmt: skip
        return lines


def training_text(lines):
    """The text lines of a ``train.tags`` file, as the shell script's grep/sed chain leaves them."""
    return [_TAGS.sub("", line) for line in lines if not any(tag in line for tag in _DROPPED)]


def segments(lines):
    """The sentences of an ``IWSLT14.*.xml`` file: its ``<seg id=...>`` lines, unwrapped."""
    return [_SEG_END.sub("", _SEG.sub("", line)).replace("\u2019", "'")
            for line in lines if "<seg id" in line]  # fmt: skip


def tokenizer(lang):
    """``tokenizer.perl -l LANG`` as sacremoses implements it (escaping on, as the perl default)."""
    from sacremoses import MosesTokenizer

    moses = MosesTokenizer(lang=lang)
    return lambda line: moses.tokenize(line, escape=True, return_str=True)


def keep_pair(ns, nt):
    """``clean-corpus-n.perl -ratio 1.5 ... 1 175`` on one pair's token counts."""
    if not (MIN_TOKENS <= ns <= MAX_TOKENS and MIN_TOKENS <= nt <= MAX_TOKENS):
        return False
    return ns / nt <= MAX_RATIO and nt / ns <= MAX_RATIO


def _tokenize_all(lines, lang, what, log, every=20000):
    tok = tokenizer(lang)
    out = []
    for number, line in enumerate(lines, 1):
        out.append(" ".join(tok(line).split()))
        if number % every == 0:
            log(f"  {what}.{lang}: {number:,} of {len(lines):,} lines tokenized")
    return out


def build_splits(archive, log=print):
    """``{"train": pairs, "valid": pairs, "test": pairs}`` of tokenized, lower-cased text."""
    train = {}
    for lang in (SRC, TGT):
        name = TRAIN_FILE.format(lang=lang)
        train[lang] = training_text(archive.lines(name))
    if len(train[SRC]) != len(train[TGT]):
        raise RecipeError(
            f"{archive.where}: after removing the tag lines, {TRAIN_FILE.format(lang=SRC)} has "
            f"{len(train[SRC]):,} lines and {TRAIN_FILE.format(lang=TGT)} {len(train[TGT]):,}; the "
            "two sides are not aligned (a damaged or edited archive)"
        )
    log(f"  train.tags: {len(train[SRC]):,} lines a side after removing the tag lines")
    tokens = {lang: _tokenize_all(train[lang], lang, "train", log) for lang in (SRC, TGT)}
    kept = [(s.lower(), t.lower()) for s, t in zip(tokens[SRC], tokens[TGT])
            if keep_pair(len(s.split()), len(t.split()))]  # fmt: skip
    log(f"  cleaning ({MIN_TOKENS}-{MAX_TOKENS} tokens, ratio {MAX_RATIO}): kept {len(kept):,} of "
        f"{len(tokens[SRC]):,} pairs")  # fmt: skip
    if not kept:
        raise RecipeError(f"{archive.where}: no training pair is left after cleaning")
    valid = [pair for number, pair in enumerate(kept, 1) if number % VALID_EVERY == 0]
    train_pairs = [pair for number, pair in enumerate(kept, 1) if number % VALID_EVERY != 0]
    test = []
    for name in TEST_SETS:
        sides = {}
        for lang in (SRC, TGT):
            member = f"{name}.de-en.{lang}.xml"
            sides[lang] = segments(archive.lines(member))
        if len(sides[SRC]) != len(sides[TGT]) or not sides[SRC]:
            raise RecipeError(
                f"{archive.where}: {name}.de-en.{SRC}.xml has {len(sides[SRC]):,} <seg> lines and "
                f"{name}.de-en.{TGT}.xml {len(sides[TGT]):,}; a test set needs the same number, "
                "at least one"
            )
        toks = {lang: _tokenize_all(sides[lang], lang, name, log) for lang in (SRC, TGT)}
        test += [(s.lower(), t.lower()) for s, t in zip(toks[SRC], toks[TGT])]
        log(f"  test: {name}, {len(sides[SRC]):,} sentences")
    log(f"  splits: train {len(train_pairs):,}, valid {len(valid):,} (every {VALID_EVERY}rd line), "
        f"test {len(test):,} pairs")  # fmt: skip
    return {"train": train_pairs, "valid": valid, "test": test}


def input_checksum(raw_dir):
    """``{name: sha256}`` of the archive read (of every file of the unpacked folder otherwise)."""
    archive = Path(raw_dir) / ARCHIVE
    if not (Path(raw_dir) / "de-en").is_dir():
        return {ARCHIVE: sha256_file(archive)}
    names = [TRAIN_FILE.format(lang=lang) for lang in (SRC, TGT)]
    names += [f"{name}.de-en.{lang}.xml" for name in TEST_SETS for lang in (SRC, TGT)]
    return {f"de-en/{n}": sha256_file(Path(raw_dir) / "de-en" / n) for n in names}


def fetch(raw_dir, offline, log=print):
    """Make sure ``raw_dir`` has the archive or its unpacked folder (downloading the copy of
    the archive unless ``offline``)."""
    raw_dir = Path(raw_dir)
    if (raw_dir / "de-en").is_dir() or (raw_dir / ARCHIVE).exists():
        return
    if offline:
        raise RecipeError(
            f"--offline: {raw_dir / ARCHIVE} is missing. Put the IWSLT'14 TED archive there "
            f"({URLS[0]}, originally; a copy: {URLS[1]}), or its unpacked folder de-en/"
        )
    raw_dir.mkdir(parents=True, exist_ok=True)
    download(URLS[1], raw_dir / ARCHIVE, log)


def source(options):
    """The :class:`~admin_fairseq.corpora.common.Source` of IWSLT'14 De-En."""
    if options.train_size or options.valid_size or options.test_size:
        raise RecipeError("--train-size/--valid-size/--test-size apply to the Bible corpora only")
    vocab_size = options.vocab_size or VOCAB_SIZE
    raw_dir, offline = Path(options.raw_dir), options.offline
    settings = {"corpus": NAME, "vocab_size": vocab_size, "text_form": TEXT_FORM,
                "valid_every": VALID_EVERY, "test_sets": list(TEST_SETS),
                "tokens": [MIN_TOKENS, MAX_TOKENS], "max_ratio": MAX_RATIO}  # fmt: skip

    def write(out_dir, log=print):
        fetch(raw_dir, offline, log)
        write_splits(out_dir, SRC, TGT, build_splits(Archive(raw_dir), log), log)
        write_inputs(out_dir, input_checksum(raw_dir))

    return Source(SRC, TGT, vocab_size, settings, write,
                  what=f"IWSLT'14 de-en from {raw_dir}: filtering, Moses tokenization, cleaning, "
                       "lower-casing, splits",
                  encoding_note="on the tokenized text")  # fmt: skip
