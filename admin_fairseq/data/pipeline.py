"""The earlier name of the Bible's preparation: ``python -m admin_fairseq.data.pipeline --pair
en-fr --out DIR [--train-size N ...]`` runs

    python -m admin_fairseq.recipes.prepare --corpus bible-en-fr --out DIR [--train-size N ...]

which writes the splits, the sentencepiece model, the binaries and ``counts.json`` as for
every corpus (:mod:`admin_fairseq.corpora`).
"""

import argparse
import sys

from admin_fairseq.corpora import bible


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
