"""The user's own parallel corpus: plain text files, one sentence per line.

    python -m admin_fairseq.recipes.prepare --corpus text --src de --tgt en \
        --train corpus/train [--valid corpus/dev] [--test corpus/test] --out data/my-de-en

reads ``corpus/train.de`` and ``corpus/train.en`` (or the same names with ``.gz``), checks
them (aligned, UTF-8, a language code of two or three letters per side, not the same file
twice), drops pairs with an empty side (counted and reported), and, without ``--valid`` or
``--test``, holds out a seeded random sample of the training pairs for them. The result is
the same layout as the other corpora, so training, evaluation and comparison work as they
are. Every problem stops before anything is marked finished, naming the file and line.
"""

import gzip
import random
import re
from pathlib import Path

from admin_fairseq.corpora.common import MAX_RATIO, MAX_WORDS, Source, clean_pair, sha256_file, write_inputs, write_splits
from admin_fairseq.recipes import RecipeError

LANG_CODE = re.compile(r"[a-z]{2,3}")
SPLIT_SEED = 1
#: held-out sizes when --valid/--test are not given: this share of the pairs, at most MAX_HELD_OUT
HELD_OUT_SHARE = 0.05
MAX_HELD_OUT = 1000


def check_language(flag, code):
    if code is None:
        raise RecipeError(f"--corpus text needs {flag} CODE, the language code that ends the file "
                          "names (PREFIX.CODE), e.g. --src de --tgt en --train corpus/train")  # fmt: skip
    if not LANG_CODE.fullmatch(code):
        raise RecipeError(f"{flag} {code!r} is not a language code of two or three lower-case "
                          "letters (e.g. de, en, fr, zh, haw); it names the files PREFIX.CODE")  # fmt: skip
    return code


def side_path(prefix, lang):
    """``PREFIX.LANG`` if it exists, else ``PREFIX.LANG.gz``; the error names both."""
    plain = Path(f"{prefix}.{lang}")
    if plain.exists():
        return plain
    packed = Path(f"{prefix}.{lang}.gz")
    if packed.exists():
        return packed
    raise RecipeError(f"neither {plain} nor {packed} exists")


def check_inputs(src, tgt, train, valid=None, test=None):
    """The cheap checks of ``--corpus text``, before anything is read or written: two
    different language codes, a training prefix, and both files of every prefix given."""
    check_language("--src", src)
    check_language("--tgt", tgt)
    if src == tgt:
        raise RecipeError(f"--src and --tgt are both {src!r}; give the two languages of the pair")
    if not train:
        raise RecipeError("--corpus text needs --train PREFIX (the files PREFIX.SRC and PREFIX.TGT)")
    seen = {}
    for flag, prefix in (("--train", train), ("--valid", valid), ("--test", test)):
        for lang in (src, tgt) if prefix else ():
            path = side_path(prefix, lang).resolve()
            if path in seen and not seen[path].startswith(flag + " "):
                raise RecipeError(f"{flag} {prefix} and {seen[path]} name the same file {path}; "
                                  "train, valid and test must be different files")  # fmt: skip
            seen[path] = f"{flag} {prefix}"


def read_lines(path):
    """Every line of ``path`` (gzip if its name ends in .gz) as text, without its line end
    (``\\n`` or ``\\r\\n``). A line that is not UTF-8 is an error naming the line and bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    lines = []
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                raw = raw.rstrip(b"\n").rstrip(b"\r")
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError as err:
                    bad = raw[max(0, err.start - 8):err.end + 8]
                    raise RecipeError(
                        f"{path}, line {number}: not UTF-8 (bytes {bad!r} around byte "
                        f"{err.start}); convert the file to UTF-8, e.g. iconv -f LATIN1 -t UTF-8"
                    ) from None
    except (OSError, EOFError) as err:  # gzip's BadGzipFile is an OSError
        raise RecipeError(f"{path}: cannot be read ({err})") from None
    return lines


def read_pair(prefix, src, tgt, log=print):
    """The aligned, non-empty ``(src, tgt)`` pairs of ``PREFIX.src`` / ``PREFIX.tgt``."""
    paths = side_path(prefix, src), side_path(prefix, tgt)
    if paths[0].samefile(paths[1]):  # the same path, or a link to the same file
        raise RecipeError(f"{paths[0]} and {paths[1]} are the same file; give one file per language")
    sides = [read_lines(p) for p in paths]
    if len(sides[0]) != len(sides[1]):
        raise RecipeError(
            f"{paths[0]} has {len(sides[0]):,} lines but {paths[1]} has {len(sides[1]):,}: "
            "the two sides must be aligned line by line"
        )
    for path, lines in zip(paths, sides):
        if not any(line.strip() for line in lines):
            raise RecipeError(f"{path} is empty (no line with text)")
    pairs = [(s.strip(), t.strip()) for s, t in zip(*sides) if s.strip() and t.strip()]
    dropped = len(sides[0]) - len(pairs)
    if dropped:
        log(f"  {paths[0].name} / {paths[1].name}: dropped {dropped:,} of {len(sides[0]):,} pairs "
            "with an empty side")  # fmt: skip
    if sides[0] == sides[1]:
        raise RecipeError(f"{paths[0]} and {paths[1]} hold the same text; give one file per language")
    return pairs, paths, dropped


def hold_out(pairs, valid_size, test_size, seed=SPLIT_SEED):
    """``(train, valid, test)``: a seeded random sample of ``pairs`` held out for the splits
    whose size is given (0 = that split is not held out)."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    if valid_size + test_size >= len(pairs):
        raise RecipeError(f"the corpus has {len(pairs):,} pairs, too few to hold out "
                          f"{valid_size + test_size:,} for validation and test")  # fmt: skip
    valid = sorted(order[:valid_size])
    test = sorted(order[valid_size:valid_size + test_size])
    held = set(valid) | set(test)
    train = [pairs[i] for i in range(len(pairs)) if i not in held]
    return train, [pairs[i] for i in valid], [pairs[i] for i in test]


def default_held_out(n_pairs):
    return min(MAX_HELD_OUT, max(1, int(n_pairs * HELD_OUT_SHARE)))


def overlap(train, test):
    """How many test pairs have a source sentence that is also a training source sentence."""
    seen = {s for s, _ in train}
    return sum(1 for s, _ in test if s in seen)


def source(options, log=print):
    """The :class:`~admin_fairseq.corpora.common.Source` of the user's files: everything is
    read and checked here, before anything is written."""
    text = options.text or {}
    src, tgt, train, valid, test = (text.get(k) for k in ("src", "tgt", "train", "valid", "test"))
    if options.train_size or options.valid_size or options.test_size or options.raw_dir or options.offline:
        raise RecipeError("--train-size/--valid-size/--test-size/--raw-dir/--offline do not "
                          "apply to --corpus text")  # fmt: skip
    check_inputs(src, tgt, train, valid, test)
    paths = [side_path(prefix, lang) for prefix in (train, valid, test) if prefix for lang in (src, tgt)]
    vocab_size = options.vocab_size or 8000
    log(f"[1/3] reading {train}.{{{src},{tgt}}}")
    pairs, inputs, _ = read_pair(train, src, tgt, log)
    given = {}
    for split, prefix in (("valid", valid), ("test", test)):
        if prefix:
            given[split], paths, _ = read_pair(prefix, src, tgt, log)
            inputs += paths
    sizes = {split: 0 if split in given else default_held_out(len(pairs)) for split in ("valid", "test")}
    train_pairs, held_valid, held_test = hold_out(pairs, sizes["valid"], sizes["test"])
    splits = {"valid": given.get("valid", held_valid), "test": given.get("test", held_test)}
    for split in ("valid", "test"):
        if split not in given:
            log(f"  {split}: {len(splits[split]):,} training pairs held out at random (seed "
                f"{SPLIT_SEED}; give --{split} PREFIX to use your own)")  # fmt: skip
    shared = overlap(train_pairs, splits["test"])
    if shared:
        log(f"  warning: {shared:,} of {len(splits['test']):,} test pairs have a source sentence "
            "that is also in the training data; their scores will be too good")  # fmt: skip
    cleaned = [pair for pair in (clean_pair(s, t) for s, t in train_pairs) if pair is not None]
    log(f"  train: kept {len(cleaned):,} of {len(train_pairs):,} pairs after cleaning (at most "
        f"{MAX_WORDS} words a side, length ratio at most {MAX_RATIO})")  # fmt: skip
    if not cleaned:
        raise RecipeError(f"no training pair of {train}.{{{src},{tgt}}} is left after cleaning")
    sums = {str(path): sha256_file(path) for path in inputs}
    settings = {"corpus": "text", "src": src, "tgt": tgt, "vocab_size": vocab_size,
                "train": str(train), "valid": str(valid) if valid else None,
                "test": str(test) if test else None, "split_seed": SPLIT_SEED,
                "held_out": sizes, "max_words": MAX_WORDS, "max_ratio": MAX_RATIO,
                "inputs_sha256": sums}  # fmt: skip

    def write(out_dir, log=print):
        write_splits(out_dir, src, tgt, {"train": cleaned, **splits}, log)
        write_inputs(out_dir, sums)

    return Source(src, tgt, vocab_size, settings, write, what="", inputs=tuple(paths))  # step 1's line printed above
