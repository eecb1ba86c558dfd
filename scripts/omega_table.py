#!/usr/bin/env python
"""Print omega for each output-change scale as a Markdown table (the table of docs/usage.md).

    python scripts/omega_table.py 12 18 24 36 54 120 200 300
"""

import argparse

from admin_fairseq.core.omega import omega_table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("n", nargs="*", type=int, default=[12, 18, 36, 120, 180, 300],
                        help="numbers of residual sub-layers per stack (2L encoder, 3L decoder)")
    print(omega_table(parser.parse_args().n))


if __name__ == "__main__":
    main()
