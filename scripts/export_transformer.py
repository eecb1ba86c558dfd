#!/usr/bin/env python
"""Export a trained Admin checkpoint as a plain fairseq ``transformer`` checkpoint.

    python scripts/export_transformer.py --input checkpoints/admin/checkpoint_best.pt \
        --output checkpoints/admin/transformer.pt --data data-bin/wmt14_en_fr

The result loads with ``fairseq-generate``/``fairseq-interactive`` and hub loading without
``--user-dir``. The script prints how each sub-layer's omega was folded and the maximum
absolute difference of the decoder's log-probabilities between the two models on a batch of
``--subset`` (real sentences when the binarised data is found, else random tokens). The
fold is exact for every Admin and DeepNet model fairseq's ``transformer`` can hold; where it
unties shared embeddings or writes sinusoidal positions as a table, it says so and how many
parameters that adds. When the model cannot be folded it says why and writes nothing.
"""

import argparse
import logging
import sys
from pathlib import Path

from admin_fairseq.errors import UserError
from admin_fairseq.export import export_checkpoint, max_logprob_difference
from admin_fairseq.argtypes import positive_int


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--input", required=True, help="checkpoint written with --arch transformer_admin*")
    parser.add_argument("--output", required=True, help="where to write the plain transformer checkpoint")
    parser.add_argument("--data", default=None,
                        help="binarised data folder (default: the one recorded in the checkpoint)")
    parser.add_argument("--subset", default="valid", help="split used for the check (default valid)")
    parser.add_argument("--max-sentences", type=positive_int, default=32)
    parser.add_argument("--no-check", action="store_true", help="skip the output comparison")
    parser.add_argument("--verbose", action="store_true", help="print every sub-layer's fold")
    args = parser.parse_args(argv)
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    try:
        report = export_checkpoint(args.input, args.output)
    except UserError as err:  # the model cannot be folded, or the checkpoint cannot be read
        print(f"export: error: {err}\nnothing was written.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("export: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(f"wrote {report.output} (--arch transformer, no --user-dir needed)")
    print(f"folded omega of {len(report.steps)} sub-layers")
    for line in report.steps if args.verbose else []:
        print(f"  {line}")
    for line in report.changes:
        print(f"  changed: {line}")
    if report.added_parameters:
        print(f"  the fold into the embeddings added {report.added_parameters:,} parameters "
              f"({report.added_parameters * 4 / 2**20:.1f} MiB in float32)")
    if not args.no_check:
        try:
            diff, described = max_logprob_difference(
                args.input, args.output, args.data, args.subset, args.max_sentences
            )
        except BaseException as err:  # an export that was not checked is not left as if it were
            Path(args.output).unlink(missing_ok=True)
            if not isinstance(err, (UserError, KeyboardInterrupt)):
                raise
            print(f"export: error: the check of {args.output} failed ({err or 'interrupted'}); it was "
                  "removed", file=sys.stderr)  # fmt: skip
            return 130 if isinstance(err, KeyboardInterrupt) else 2
        print(f"max |log p(admin) - log p(export)| = {diff:.3g} over {described}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
