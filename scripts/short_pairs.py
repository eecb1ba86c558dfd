"""Write the pairs of a parallel corpus whose two sides are both short: a small corpus of
short sentences, made from one the project already has.

    python scripts/short_pairs.py outputs/main/data/train en fr --max-words 20 --out corpus/short

Reads ``PREFIX.SRC`` and ``PREFIX.TGT`` (one sentence per line, aligned) and writes the pairs
with at most ``--max-words`` words (split on white space) on each side to ``OUT.SRC`` and
``OUT.TGT``, in their order. From the main job's Bible (every book but Mark), ``--max-words
20`` keeps 11,417 of 30,124 verse pairs: the short corpus of docs/main-job.md.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admin_fairseq import atomic  # noqa: E402
from admin_fairseq.argtypes import positive_int  # noqa: E402


def short_pairs(src_lines, tgt_lines, max_words):
    return [(s, t) for s, t in zip(src_lines, tgt_lines)
            if len(s.split()) <= max_words and len(t.split()) <= max_words]  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("prefix", help="PREFIX of the corpus files (PREFIX.SRC, PREFIX.TGT)")
    parser.add_argument("src")
    parser.add_argument("tgt")
    parser.add_argument("--max-words", type=positive_int, default=20, help="most words per side (default 20)")
    parser.add_argument("--out", required=True, help="PREFIX of the files written")
    args = parser.parse_args(argv)
    sides = []
    for lang in (args.src, args.tgt):
        path = Path(f"{args.prefix}.{lang}")
        if not path.is_file():
            print(f"short_pairs: error: {path} not found", file=sys.stderr)
            return 2
        sides.append(path.read_text(encoding="utf-8").splitlines())
    if len(sides[0]) != len(sides[1]):
        print(f"short_pairs: error: {args.prefix}.{args.src} has {len(sides[0]):,} lines, "
              f"{args.prefix}.{args.tgt} {len(sides[1]):,}", file=sys.stderr)  # fmt: skip
        return 2
    pairs = short_pairs(*sides, args.max_words)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for k, lang in enumerate((args.src, args.tgt)):
        atomic.write_text(Path(f"{args.out}.{lang}"), "".join(p[k] + "\n" for p in pairs))
    print(f"kept {len(pairs):,} of {len(sides[0]):,} pairs with at most {args.max_words} words a side: "
          f"{args.out}.{args.src}, {args.out}.{args.tgt}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
