"""``python -m admin_fairseq.monitor RUN``: the stability monitor's warnings, replayed from a
run's log (its ``train.log`` and ``run.json``, or a fairseq JSON log with ``--warmup`` and
``--lr``), with another ``--factor`` if wanted; the rules are :func:`admin_fairseq.monitor.replay`.
"""

import argparse
import sys
from pathlib import Path

from admin_fairseq import command, fairseq_log
from admin_fairseq.argtypes import nonnegative_int, positive_float, ranged
from admin_fairseq.errors import UserError
from admin_fairseq.monitor import DEFAULT_FACTOR, replay
from admin_fairseq.recipes.record import RunRecord


def main(argv=None):
    """``python -m admin_fairseq.monitor RUN_DIR_OR_LOG``: the range warnings of a recorded run
    by the monitor's rules, with another ``--factor`` if asked (the log's own warnings are
    those of the rules and factor the run had)."""
    parser = argparse.ArgumentParser(description=main.__doc__.split("\n\n")[0].replace("``", ""),
                                     allow_abbrev=False)  # fmt: skip
    parser.add_argument("run", help="a run folder (its train.log and run.json) or a fairseq JSON log")
    parser.add_argument("--factor", type=ranged(float, 1, low_open=True), default=DEFAULT_FACTOR, help=f"(default {DEFAULT_FACTOR:g})")
    parser.add_argument("--warmup", type=nonnegative_int, help="warm-up updates (default: the run's --warmup-updates)")
    parser.add_argument("--lr", type=positive_float, help="peak learning rate (default: the run's --lr)")
    args = parser.parse_args(argv)
    path = Path(args.run)
    log_path = path / "train.log" if path.is_dir() else path
    if not log_path.is_file():
        what = "does not exist" if not log_path.exists() else "is not a regular file"
        print(f"monitor: error: {log_path} {what}; give a run folder (its train.log and run.json) "
              "or a fairseq JSON log", file=sys.stderr)  # fmt: skip
        return 2
    try:  # the run's record (the train step's run.json), when there is one
        record = RunRecord.read_if_any(log_path.parent)
    except UserError as err:
        print(f"monitor: error: {err}", file=sys.stderr)
        return 2
    flag = record.flag if record is not None else (lambda name: None)
    warmup = args.warmup if args.warmup is not None else int(flag("--warmup-updates") or 0)
    peak = args.lr if args.lr is not None else float(flag("--lr") or 0)
    if not peak:
        print(f"monitor: error: no run.json next to {log_path} to take the peak learning rate from; "
              "give --lr (and --warmup)", file=sys.stderr)  # fmt: skip
        return 2
    records = {}
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for _, stats in fairseq_log.records(f, "train_inner"):
            values = {k: float(v) for k, v in stats.items() if k.startswith(("share/", "output_change"))}
            if values:
                records[int(stats["num_updates"])] = {**values, "lr": float(stats.get("lr", peak))}
    if not records:
        print(f"monitor: error: {log_path} holds no measurement of the monitor (--admin-monitor-interval)",
              file=sys.stderr)  # fmt: skip
        return 2
    messages = replay(records, warmup, peak, args.factor)
    print(f"{len(records)} measurements (updates {min(records)}-{max(records)}), warm-up {warmup}, peak lr "
          f"{peak:g}, factor {args.factor:g}: {len(messages)} warning(s)")  # fmt: skip
    for message in messages:
        print(f"  {message}")
    return 0


if __name__ == "__main__":
    sys.exit(command.run("monitor", main))
