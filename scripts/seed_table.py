"""Put the comparison tables of several main-job runs (one per seed) side by side.

    python scripts/seed_table.py results/main_job results/main_job_seeds/seed2 ... \
        > results/main_job_seeds/summary.md

Reads each folder's ``comparison.csv`` and ``main_job.json`` (for its seed) and prints, per
method (by default every method that all the seeds have), the best validation loss,
sacreBLEU and chrF of every seed and their mean. Folders of the same seed are read as one
(the default run and a run of one more method with the same settings, for example); a
method found twice for one seed is an error.
"""

import argparse
import csv
import json
import statistics
from pathlib import Path


def load(folder):
    folder = Path(folder)
    seed = json.loads((folder / "main_job.json").read_text())["settings"]["seed"]
    with open(folder / "comparison.csv") as f:
        return seed, {row["method"]: row for row in csv.DictReader(f)}


def by_seed(folders):
    """``[(seed, {method: row})]`` in seed order, the folders of one seed merged."""
    merged = {}
    for folder in folders:
        seed, rows = load(folder)
        both = sorted(set(rows) & set(merged.get(seed, {})))
        if both:
            raise SystemExit(f"seed_table: error: seed {seed} has {', '.join(both)} in more than one folder "
                             f"(the second: {folder})")  # fmt: skip
        merged.setdefault(seed, {}).update(rows)
    return sorted(merged.items())


def table(folders, methods):
    runs = by_seed(folders)
    seeds = [seed for seed, _ in runs]
    head = ["method", "metric"] + [f"seed {s}" for s in seeds] + ["mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in methods:
        for key, name, digits in (("best_valid_loss", "valid loss", 3), ("bleu", "BLEU", 2),
                                  ("chrf", "chrF", 1)):  # fmt: skip
            values = [float(rows[method][key]) for _, rows in runs]
            cells = [f"{v:.{digits}f}" for v in values] + [f"{statistics.mean(values):.{digits}f}"]
            lines.append(f"| {method} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("folders", nargs="+", help="main-job output folders")
    parser.add_argument("--methods", help="comma-separated (default: those every folder has)")
    args = parser.parse_args(argv)
    if args.methods:
        methods = args.methods.split(",")
    else:
        runs = [rows for _, rows in by_seed(args.folders)]
        methods = [m for m in runs[0] if all(m in rows for rows in runs)]
    print(table(args.folders, methods), end="")


if __name__ == "__main__":
    main()
