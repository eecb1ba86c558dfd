"""Bible corpus -> sentencepiece -> ``fairseq-preprocess``: the Bible's steps of the prepare step.

    python -m admin_fairseq.recipes.prepare --corpus bible-en-fr --out data/bible-en-fr-small \
        --train-size 3000 --valid-size 100 --test-size 100 --vocab-size 1000

writes the raw splits to ``--out``, the sentencepiece model and encoded splits under it, the
binarised data to ``{out}/bin`` and the counts to ``counts.json``; finished steps are
skipped. ``python -m admin_fairseq.data.pipeline --pair en-fr --out ...`` (the earlier name,
with the same size flags) runs that same command.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from admin_fairseq import atomic
from admin_fairseq.data import bible, spm


def fairseq_preprocess(spm_dir, dest, src, tgt, workers=2, log=print):
    """Binarise ``{spm_dir}/{train,valid,test}.{src,tgt}`` with a joined dictionary."""
    dest = Path(dest)
    done = dest / "preprocess.done"
    if done.exists():
        log(f"{dest}: already binarised")
        return dest
    if dest.exists():
        shutil.rmtree(dest)  # a half-written folder from an interrupted run
    exe = Path(sys.executable).parent / "fairseq-preprocess"
    cmd = [str(exe) if exe.exists() else "fairseq-preprocess",
           "--source-lang", src, "--target-lang", tgt, "--joined-dictionary",
           "--trainpref", str(Path(spm_dir) / "train"), "--validpref", str(Path(spm_dir) / "valid"),
           "--testpref", str(Path(spm_dir) / "test"), "--destdir", str(dest),
           "--workers", str(workers)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"fairseq-preprocess failed:\n{(result.stdout + result.stderr)[-3000:]}")
    atomic.write_text(done, "ok\n")
    log(f"{dest}: binarised")
    return dest


def binarize_bible(out_dir, pair="en-fr", train_size=None, valid_size=500, test_size=None,
                   vocab_size=8000, log=print):  # fmt: skip
    """Split, encode and binarise the Bible corpus in ``out_dir``, keeping the steps already
    done; return ``{raw, spm_model, bin}``. Called by the prepare step
    (:func:`admin_fairseq.recipes.prepare.prepare`), which starts the folder afresh when its
    settings change and records the counts."""
    out_dir = Path(out_dir)
    src, tgt = bible.parse_pair(pair)
    bible.prepare(out_dir, pair, valid_size=valid_size, train_size=train_size,
                  test_size=test_size, log=log, reuse=True)  # fmt: skip
    spm.train_and_encode(out_dir, src, tgt, vocab_size, log=log)
    binary = fairseq_preprocess(out_dir / "spm", out_dir / "bin", src, tgt, log=log)
    return {"raw": out_dir, "spm_model": out_dir / "spm.model", "bin": binary}


def main(argv=None):
    """The prepare step for the Bible under its earlier name: the same folder as
    ``python -m admin_fairseq.recipes.prepare --corpus bible-PAIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--pair", default="en-fr")
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--valid-size", type=int, default=500)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        bible.parse_pair(args.pair)  # the languages first: no download for a pair it lacks
    except ValueError as err:
        print(f"pipeline: error: {err}", file=sys.stderr)
        return 2
    from admin_fairseq.recipes import prepare

    argv = ["--corpus", f"bible-{args.pair}", "--out", args.out, "--valid-size", str(args.valid_size),
            "--vocab-size", str(args.vocab_size)]  # fmt: skip
    for flag, value in (("--train-size", args.train_size), ("--test-size", args.test_size)):
        if value is not None:
            argv += [flag, str(value)]
    return prepare.main(argv)


if __name__ == "__main__":
    sys.exit(main())
