"""``python -m admin_fairseq``: where the plugin is, for fairseq's ``--user-dir``.

    fairseq-train data/bin --user-dir "$(python -m admin_fairseq --user-dir)" ...

works from any folder and after a non-editable install, where ``admin_fairseq`` is a folder
inside site-packages rather than the repository's ``admin_fairseq``.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m admin_fairseq", allow_abbrev=False,
        description="Print the plugin's version and the folder to pass to fairseq's --user-dir.",
    )  # fmt: skip
    parser.add_argument("--user-dir", action="store_true", help="print only the folder (for scripts)")
    args = parser.parse_args(argv)
    folder = Path(__file__).resolve().parent
    if args.user_dir:
        print(folder)
        return 0
    from admin_fairseq import __version__

    print(f"admin_fairseq {__version__}\n--user-dir {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
