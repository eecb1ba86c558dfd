"""Re-apply today's status rule to a committed main-job run, from its own console log.

    python scripts/restatus.py results/main_job_all_methods

A main-job folder keeps ``comparison.md`` as the run wrote it. A run made before the
comparison learnt a status (``stalled``) says ``ok`` where today's rule says otherwise. This
script reads every method's validation curve from the folder's ``log.txt`` (the main job
prints ``[run K of N: METHOD DEPTH] update U: valid loss X``), applies
:func:`admin_fairseq.recipes.compare.stalled_runs` to the runs the table calls ``ok``, and
writes ``comparison-today.md``: the same table with the status column re-derived and a line
saying so. Nothing else in the table changes.
"""

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admin_fairseq import atomic  # noqa: E402
from admin_fairseq.recipes.compare import stalled_runs  # noqa: E402

_VALID = re.compile(r"\[run \d+ of \d+: (\S+) \S+\] update (\d+): valid loss ([\d.]+)")


def curves(log_text):
    """``{method: [(update, valid loss)]}`` from a main job's console log."""
    found = {}
    for method, update, loss in _VALID.findall(log_text):
        found.setdefault(method, []).append((int(update), float(loss)))
    return found


def restatus(table, log_text):
    """``table`` (a comparison.md) with the status of its ``ok`` rows re-derived."""
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    at_method, at_status = head.index("method"), head.index("status")
    rows = {}
    for k, line in enumerate(lines[2:], 2):
        if not line.startswith("|"):
            break
        cells = line.strip("|").split("|")
        rows[k] = cells
    ok = {cells[at_method].strip() for cells in rows.values() if cells[at_status].strip() == "ok"}
    stalled = stalled_runs({m: c for m, c in curves(log_text).items() if m in ok})
    for k, cells in rows.items():
        if cells[at_method].strip() in stalled:
            cells[at_status] = " stalled "
            lines[k] = "|" + "|".join(cells) + "|"
    end = 2 + len(rows)
    note = ("Status re-derived from the run's log by today's rule (`python scripts/restatus.py`); "
            "the run's own comparison.md, written before the rule existed, says ok.")  # fmt: skip
    return "\n".join([*lines[:end], "", note, *lines[end:]]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("folder", help="a main-job output folder (comparison.md and log.txt)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    for name in ("comparison.md", "log.txt"):
        if not (folder / name).is_file():
            print(f"restatus: error: {folder / name} not found; give a main-job output folder", file=sys.stderr)
            return 2
    text = restatus((folder / "comparison.md").read_text(encoding="utf-8"),
                    (folder / "log.txt").read_text(encoding="utf-8"))  # fmt: skip
    atomic.write_text(folder / "comparison-today.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
