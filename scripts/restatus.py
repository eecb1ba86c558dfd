"""Re-apply today's status rule to a committed main-job run, from its own console log.

    python -m admin_fairseq.recipes.prepare --corpus bible-en-fr --out data/bible --valid-size 300   # the main job's data
    python scripts/restatus.py results/main_job_all_methods --data data/bible/bin

A main-job folder keeps ``comparison.md`` and ``loss_curves.png`` as the run wrote them. A
run made before the comparison learnt a status (``stalled``) or its frequency baseline says
``ok`` where today's rule says otherwise, and its plot labels fairseq's losses (bits) as nats.
This script reads every method's curves from the folder's ``log.txt`` (the main job prints
``[run K of N: METHOD DEPTH] update U/T: train loss X`` and ``... update U: valid loss X``),
applies :func:`admin_fairseq.recipes.compare.stalled_runs` to the runs the table calls
``ok``, and writes

- ``comparison-today.md``: the same table with the status column re-derived, and a line
  saying so (and giving the frequency baseline). Nothing else in the table changes.
- ``loss_curves-today.png``: the curves drawn again by today's plot (bits per token, the
  status of each run, the frequency baseline as a dashed line).

The rule's frequency baseline needs the runs' binarized data (``--data``: the ``bin`` folder
of the data they trained on; the main job's Bible comes out byte for byte the same each time
it is prepared, by the main job or by the first command above); without it, only the rule's
comparison with the other runs applies.
"""

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admin_fairseq import atomic, main_job  # noqa: E402
from admin_fairseq.recipes.compare import frequency_loss, plot, stalled_runs  # noqa: E402
from admin_fairseq.argtypes import ranged  # noqa: E402

_VALID = re.compile(r"\[run \d+ of \d+: (\S+) \S+\] update (\d+): valid loss ([\d.]+)")
_TRAIN = re.compile(r"\[run \d+ of \d+: (\S+) \S+\] update (\d+)/\d+: train loss ([\d.]+)")


def curves(log_text, kind="valid"):
    """``{method: [(update, loss)]}`` of the validation (or, with ``kind="train"``,
    training) loss from a main job's console log."""
    found = {}
    for method, update, loss in (_VALID if kind == "valid" else _TRAIN).findall(log_text):
        found.setdefault(method, []).append((int(update), float(loss)))
    return found


def _table_rows(lines):
    """``{line number: cells}`` of the table at the top of a comparison.md."""
    rows = {}
    for k, line in enumerate(lines[2:], 2):
        if not line.startswith("|"):
            break
        rows[k] = line.strip("|").split("|")
    return rows


def restatus(table, log_text, baseline=None):
    """``table`` (a comparison.md) with the status of its ``ok`` rows re-derived, given the
    frequency baseline of its data (None: unknown)."""
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    at_method, at_status = head.index("method"), head.index("status")
    rows = _table_rows(lines)
    ok = {cells[at_method].strip() for cells in rows.values() if cells[at_status].strip() == "ok"}
    stalled = stalled_runs({m: c for m, c in curves(log_text).items() if m in ok}, baseline)
    for k, cells in rows.items():
        if cells[at_method].strip() in stalled:
            cells[at_status] = " stalled "
            lines[k] = "|" + "|".join(cells) + "|"
    end = 2 + len(rows)
    if stalled:
        note = ("Status re-derived from the run's log by today's rule (`scripts/restatus.py`, run as docs/main-job.md shows); "
                "the run's own comparison.md, written before the rule existed, says ok.")  # fmt: skip
    else:
        note = ("Status re-derived from the run's log by today's rule (`scripts/restatus.py`, run as docs/main-job.md shows): "
                "the same as the run's own comparison.md.")  # fmt: skip
    if baseline is not None:
        note += (f" Frequency baseline of its data (a model that ignores the source and gives each "
                 f"target token its training frequency): validation loss {baseline:.3f} bits.")  # fmt: skip
    return "\n".join([*lines[:end], "", note, *lines[end:]]) + "\n"


def title(settings):
    """The title the main job gives its plot, from the settings in its ``main_job.json`` (a
    prepared folder, no longer there, is named by its folder)."""
    if settings.get("text"):
        text = settings["text"]
        corpus = f"{main_job.short_prefix(text['train'])} ({text['src']}-{text['tgt']})"
    elif settings.get("data"):
        corpus = Path(settings["data"]).name
    else:
        corpus = f"Bible {settings['pair']}"
    return main_job.plot_title(settings, corpus)


def replot(today, log_text, settings, path, baseline=None):
    """Draw the curves of ``log_text`` again, with the status of ``today`` (a re-derived
    comparison.md), into ``path``."""
    lines = today.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    train, valid = curves(log_text, "train"), curves(log_text)
    runs = []
    for cells in _table_rows(lines).values():
        row = dict(zip(head, (c.strip() for c in cells)))
        row["frequency_loss"] = baseline
        runs.append((row, {"train": train.get(row["method"], []), "valid": valid.get(row["method"], [])}))
    with atomic.replacing(path) as tmp:
        plot(runs, tmp, title(settings))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("folder", help="a main-job output folder (comparison.md, log.txt, main_job.json)")
    parser.add_argument("--data", help="the binarized data the runs trained on (a folder with dict.TGT.txt)")
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="fr")
    parser.add_argument("--label-smoothing", type=ranged(float, 0, 1, high_open=True), default=0.1, help="the runs' (default 0.1, the main job's)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    for name in ("comparison.md", "log.txt", "main_job.json"):
        if not (folder / name).is_file():
            print(f"restatus: error: {folder / name} not found; give a main-job output folder", file=sys.stderr)
            return 2
    baseline = None
    if args.data:
        baseline = frequency_loss(args.data, args.src, args.tgt, args.label_smoothing)
        if baseline is None:
            print(f"restatus: error: {args.data} has no binarized train and valid data of {args.src}-{args.tgt} "
                  "(fairseq-preprocess's layout)", file=sys.stderr)  # fmt: skip
            return 2
    log_text = (folder / "log.txt").read_text(encoding="utf-8")
    today = restatus((folder / "comparison.md").read_text(encoding="utf-8"), log_text, baseline)
    atomic.write_text(folder / "comparison-today.md", today)
    settings = json.loads((folder / "main_job.json").read_text(encoding="utf-8"))["settings"]
    replot(today, log_text, settings, folder / "loss_curves-today.png", baseline)
    print(today, end="")
    print(f"wrote {folder / 'comparison-today.md'}, {folder / 'loss_curves-today.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
