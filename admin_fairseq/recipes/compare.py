"""Compare recipe runs: a table (Markdown and CSV) and a plot of all loss curves.

    python -m admin_fairseq.recipes.compare runs/wmt17-en-de/* --out results/wmt17-en-de

For each run folder it reads ``run.json`` (method, depth, batch), the JSON log lines of
``train.log`` (training loss every ``--log-interval`` updates, validation loss) and
``eval/test.json`` (BLEU), and writes ``comparison.md``, ``comparison.csv`` and
``loss_curves.png`` (training and validation loss against updates, all runs on shared axes),
and ``stability.png`` and ``stability.md`` when the runs recorded the stability monitor
(``--monitor``; the output change per update and every sub-layer's branch share over
training, docs/monitor.md).

A run is reported as ``diverged`` when a logged loss is not finite, fairseq stopped it with a
floating-point or minimum-loss-scale error, or its last training loss is more than
``DIVERGED_RISE`` above its lowest (the loss went back up); ``failed`` when it exited non-zero
for another reason; ``running`` while its ``run.json`` says so; ``stalled`` (see
:func:`stalled_runs`) when it trained without error but its validation loss stopped
improving at a level the data give without any learning (:func:`frequency_loss`: a model that
predicts target tokens by their training frequency), or far above a run that kept improving.
"""

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

from admin_fairseq import atomic, command, fairseq_log, outputs
from admin_fairseq.curves import (  # noqa: F401  the stall rule and baseline, as compare's own
    BASELINE_MARGIN, PEER_GAIN, STALL_GAIN, STALL_GAP, frequency_loss, second_half_gain, stalled_runs)
from admin_fairseq.recipes import RecipeError
from admin_fairseq.recipes.record import RunRecord

#: fairseq logs its losses in bits per token (its criterions divide by ln 2); so are these
DIVERGED_RISE = 1.0  # bits
_BLOWUP = ("FloatingPointError", "Minimum loss scale reached", "loss is nan", "NaN or Inf")


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


#: the stability monitor's quantities in the log lines (admin_fairseq.monitor)
MONITOR_PREFIXES = ("share/", "output_change/", "output_change_per_lr2/", "gnorm/", "omega/",
                    "omega_min/", "omega_max/")  # fmt: skip


def read_log(path):
    """``{"train": [(update, loss)], "valid": [(update, loss)], "blowup": bool, "monitor":
    {update: {name: value}}}`` from a fairseq ``--log-format json`` log (``monitor``: the
    stability monitor's quantities, when the run recorded them). A resumed run logs the same
    updates again; the latest value of each update wins."""
    train, valid, blowup, monitor = {}, {}, False, {}
    if not Path(path).exists():
        return {"train": [], "valid": [], "blowup": False, "monitor": {}}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if any(marker in line for marker in _BLOWUP):
                blowup = True
            found = fairseq_log.record(line)
            if found is None:
                continue
            kind, stats = found
            if kind == "train_inner":
                update = int(_float(stats.get("num_updates")))
                train[update] = _float(stats.get("loss"))
                measured = {k: _float(v) for k, v in stats.items() if k.startswith(MONITOR_PREFIXES)}
                if measured:
                    monitor[update] = measured
            elif kind == "valid":
                valid[int(_float(stats.get("valid_num_updates")))] = _float(stats.get("valid_loss"))
    return {"train": sorted(train.items()), "valid": sorted(valid.items()), "blowup": blowup,
            "monitor": dict(sorted(monitor.items()))}  # fmt: skip


def baseline_inputs(record):
    """``(bin_dir, src, tgt, label_smoothing)`` of a run (its :class:`RunRecord`), the
    arguments of :func:`frequency_loss`; None when they cannot be told."""
    if not record.fairseq_flags or record.fairseq_flags[0].startswith("-"):
        return None
    languages = record.languages()
    if languages is None:
        return None
    return str(record.bin_dir), *languages, record.label_smoothing


def _scores(run_dir, subset, record):
    """The evaluate step's scores of ``run_dir`` on ``subset``, or None when there are none
    of the run that ``record`` describes (none yet, or an earlier run's in the same folder:
    the evaluate step records which run it scored)."""
    path = run_dir / "eval" / f"{subset}.json"
    if not path.exists():
        return None
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in ("bleu", "chrf", "tokenized_bleu", "bleu_signature") if k not in scores]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise RecipeError(f"{path} is not a score file of the evaluate step ({type(err).__name__}: "
                          f"{err}); run the evaluate step again for {run_dir}") from None  # fmt: skip
    return scores if scores.get("run_started", record.started) == record.started else None


def summarize(run_dir, subset="test", baselines=None):
    """``(row, log)`` of one run folder: its table row and its curves (:func:`read_log`).
    ``baselines`` caches :func:`frequency_loss` by its arguments across the runs of one
    comparison."""
    run_dir = Path(run_dir)
    record = RunRecord.read(run_dir)
    log = read_log(run_dir / "train.log")
    losses = [loss for _, loss in log["train"] + log["valid"]]
    train_losses = [loss for _, loss in log["train"]]
    nonfinite = any(not math.isfinite(x) for x in losses)
    rose = bool(train_losses) and train_losses[-1] > min(train_losses) + DIVERGED_RISE
    if nonfinite or log["blowup"] or rose:
        status = "diverged"
    elif record.status == "running":
        status = "running"
    elif record.exit_code:
        status = "failed"
    else:
        status = "ok"
    finite_valid = [loss for _, loss in log["valid"] if math.isfinite(loss)]
    updates = max([u for u, _ in log["train"] + log["valid"]], default=0)
    row = {
        "run": run_dir.name, "method": record.method,
        "layers": f"{record.encoder_layers}-{record.decoder_layers}", "batch": record.batch,
        "updates": updates, "best_valid_loss": min(finite_valid) if finite_valid else None,
        "last_train_loss": train_losses[-1] if train_losses else None, "status": status,
        "bleu": None, "chrf": None, "tokenized_bleu": None, "bleu_signature": "",
        "seed": record.seed, "text_form": None, "frequency_loss": None,
    }  # fmt: skip
    inputs = baseline_inputs(record)
    if inputs is not None:
        baselines = {} if baselines is None else baselines
        if inputs not in baselines:
            baselines[inputs] = frequency_loss(*inputs)
        row["frequency_loss"] = baselines[inputs]
    scores = _scores(run_dir, subset, record) if status not in ("failed", "running") else None
    if scores is not None:
        row.update(bleu=scores["bleu"], chrf=scores["chrf"], tokenized_bleu=scores["tokenized_bleu"],
                   bleu_signature=scores["bleu_signature"], text_form=scores.get("text_form"))  # fmt: skip
    return row, log


def _fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows):
    head = ["method", "layers", "batch", "updates", "best valid loss", "status", "BLEU", "chrF",
            "tok. BLEU"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["layers"], r["batch"], str(r["updates"]),
                 _fmt(r["best_valid_loss"], 3), r["status"], _fmt(r["bleu"]), _fmt(r["chrf"], 1),
                 _fmt(r["tokenized_bleu"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    signatures = sorted({r["bleu_signature"] for r in rows if r["bleu_signature"]})
    lines.append("")
    if any(r["text_form"] for r in rows):  # a corpus written tokenized (IWSLT'14): BLEU is on that text
        lines.append("BLEU and chrF: sacreBLEU on the output as the corpus is written (tokenized, "
                     "lower-cased)" + (f", BLEU signature `{signatures[0]}`" if len(signatures) == 1 else "")
                     + ". tok. BLEU: BLEU-4 on the same text by fairseq's scorer, the number the "
                     "papers report for this corpus.")  # fmt: skip
    else:
        lines.append("BLEU and chrF: sacreBLEU on detokenized output"
                     + (f" (BLEU signature `{signatures[0]}`)" if len(signatures) == 1 else "") + ". "
                     "tok. BLEU: Moses-tokenized (compound-split for German), as the papers report; "
                     "not comparable with sacreBLEU.")  # fmt: skip
    if len(signatures) > 1:
        lines += [f"- signature: `{s}`" for s in signatures]
    floors = sorted({round(r["frequency_loss"], 3) for r in rows if r["frequency_loss"] is not None})
    if floors:
        lines += ["", "Losses in bits per token (base 2, as fairseq logs them). Frequency baseline: a model "
                  "that ignores the source and gives each target token its training frequency has "
                  "validation loss " + " / ".join(f"{x:.3f}" for x in floors) + " (`frequency_loss` in "
                  f"comparison.csv). A run whose validation loss stops falling less than {BASELINE_MARGIN} "
                  "below it is `stalled`."]  # fmt: skip
    seeds = seed_table(rows)
    if seeds:
        lines += ["", seeds.rstrip("\n")]
    return "\n".join(lines) + "\n"


def seed_table(rows):
    """Mean and standard deviation (n - 1) over seeds of each method, depth and batch that
    was run with more than one seed; empty when there is none."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["layers"], r["batch"]), []).append(r)
    groups = {key: runs for key, runs in groups.items() if len({r["seed"] for r in runs}) > 1}
    if not groups:
        return ""

    def spread(values, digits):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    head = ["method", "layers", "batch", "seeds", "best valid loss", "BLEU", "tok. BLEU", "not ok"]
    lines = ["Over seeds (mean ± standard deviation with n - 1, of the runs whose status is ok):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for (method, layers, batch), runs in groups.items():
        ok = [r for r in runs if r["status"] == "ok"]
        cells = [method, layers, batch, " ".join(str(r["seed"]) for r in runs),
                 spread([r["best_valid_loss"] for r in ok], 3), spread([r["bleu"] for r in ok], 2),
                 spread([r["tokenized_bleu"] for r in ok], 2),
                 ", ".join(f"{r['seed']} {r['status']}" for r in runs if r["status"] != "ok") or "-"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs, path, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True, sharey=True)
    for row, log in runs:
        label = f"{row['method']} {row['layers']} ({row['status']})"
        for ax, key in zip(axes, ("train", "valid")):
            points = [(u, min(loss, 1e3)) for u, loss in log[key] if math.isfinite(loss)]
            if points:
                ax.plot(*zip(*points), marker="." if key == "valid" else None, label=label)
    for ax, name in zip(axes, ("training loss", "validation loss")):
        ax.set_title(name)
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
    floors = {row["frequency_loss"] for row, _ in runs if row["frequency_loss"] is not None}
    if len(floors) == 1:
        axes[1].axhline(floors.pop(), color="grey", linestyle="--", linewidth=1,
                        label="frequency baseline (no learning)")
    axes[0].set_ylabel("loss (bits per token, label-smoothed)")
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


_SUBLAYER_ORDER = {"self_attn": 0, "cross_attn": 1, "ffn": 2}


def sublayer_order(name):
    """Sort key of a sub-layer's name (``encoder.03.ffn``): the encoder bottom-up, then the
    decoder, and within a layer the order its forward reaches the sub-layers."""
    stack, layer, kind = name.split(".")
    return (stack != "encoder", int(layer), _SUBLAYER_ORDER.get(kind, 3))


def plot_stability(runs, path, title=None):
    """The monitor's picture of the runs that recorded it: the training loss and the output
    change per update of every run (top), and one map per run of each sub-layer's branch
    share over training (bottom). False (nothing written) when no run recorded it."""
    runs = [(row, log) for row, log in runs if log.get("monitor")]
    if not runs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(2, len(runs))
    fig = plt.figure(figsize=(max(12.0, 5.0 * cols), 8.4), layout="constrained")
    grid = fig.add_gridspec(2, 2 * cols)
    loss_ax = fig.add_subplot(grid[0, :cols])
    change_ax = fig.add_subplot(grid[0, cols:])
    image, maps = None, []
    for k, (row, log) in enumerate(runs):
        label = f"{row['method']} {row['layers']} ({row['status']})"
        points = [(u, min(loss, 1e3)) for u, loss in log["train"] if math.isfinite(loss)]
        if points:
            loss_ax.plot(*zip(*points), label=label)
        change = [(u, v["output_change/decoder"]) for u, v in log["monitor"].items()
                  if math.isfinite(v.get("output_change/decoder", math.nan)) and v["output_change/decoder"] > 0]
        if change:
            change_ax.plot(*zip(*change), marker=".", label=label)
        names = sorted({k[len("share/"):] for v in log["monitor"].values() for k in v if k.startswith("share/")},
                       key=sublayer_order)  # fmt: skip
        updates = [u for u, v in log["monitor"].items() if any(k.startswith("share/") for k in v)]
        ax = fig.add_subplot(grid[1, 2 * k:2 * k + 2])
        maps.append(ax)
        if names and updates:
            shares = np.array([[log["monitor"][u].get(f"share/{n}", np.nan) for u in updates] for n in names])
            edges = [updates[0] - (updates[1] - updates[0] if len(updates) > 1 else 1) / 2]
            edges += [(a + b) / 2 for a, b in zip(updates, updates[1:])]
            edges.append(updates[-1] + (updates[-1] - updates[-2] if len(updates) > 1 else 1) / 2)
            image = ax.pcolormesh(edges, np.arange(len(names) + 1), shares, vmin=0, vmax=1, cmap="viridis")
            encoder = sum(1 for n in names if n.startswith("encoder."))
            if 0 < encoder < len(names):
                ax.axhline(encoder, color="white", linewidth=1)
            ax.set_yticks([encoder / 2, encoder + (len(names) - encoder) / 2])
            ax.set_yticklabels(["encoder", "decoder"], rotation=90, va="center")
        ax.set_title(f"branch share: {label}", fontsize=9)
        ax.set_xlabel("updates")
        if k == 0:
            ax.set_ylabel("sub-layer (bottom to top)")
    if image is not None:
        fig.colorbar(image, ax=maps, fraction=0.03, pad=0.01, label="Var[f(x)] / Var[omega x + f(x)]")
    loss_ax.set_title("training loss")
    loss_ax.set_ylabel("loss (bits per token)")
    change_ax.set_title("output change per update (decoder)")
    change_ax.set_ylabel("mean |F(x, W_after) - F(x, W_before)|^2")
    change_ax.set_yscale("log")
    for ax in (loss_ax, change_ax):
        ax.set_xlabel("updates")
        ax.grid(alpha=0.3)
    change_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return True


def stability_table(runs):
    """Markdown: per run that recorded the monitor, the output change of one update at the
    first measurement and its median over the second half of the run, and the branch shares
    (mean per stack, and the largest) at the first and the last measurement. Empty when no
    run recorded it."""
    lines = []
    for row, log in runs:
        monitor = log.get("monitor") or {}
        updates = [u for u, v in monitor.items() if "output_change/decoder" in v]
        shared = [u for u, v in monitor.items() if any(k.startswith("share/") for k in v)]
        if not updates or not shared:
            continue
        late = [monitor[u]["output_change/decoder"] for u in updates if u >= updates[-1] / 2]
        cells = [f"{row['method']} {row['layers']}", f"{monitor[updates[0]]['output_change/decoder']:.3g} "
                 f"(update {updates[0]})", f"{statistics.median(late):.3g}"]  # fmt: skip
        for u in (shared[0], shared[-1]):
            shares = {k[len("share/"):]: v for k, v in monitor[u].items() if k.startswith("share/")}
            means = [statistics.mean(v for n, v in shares.items() if n.startswith(stack + "."))
                     for stack in ("encoder", "decoder")]  # fmt: skip
            top = max(shares, key=shares.get)
            cells.append(f"{means[0]:.3f} / {means[1]:.3f}, largest {shares[top]:.3f} ({top}) at update {u}")
        peak = max(((v, k[len("share/"):], u) for u in shared for k, v in monitor[u].items()
                    if k.startswith("share/")), key=lambda item: item[0])  # fmt: skip
        cells.append(f"{peak[0]:.3f} ({peak[1]}, update {peak[2]})")
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return ""
    head = ["run", "output change, first measurement", "output change, median over the second half",
            "branch share (encoder / decoder mean), first", "branch share, last",
            "largest branch share of the run"]  # fmt: skip
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines]) + "\n"


#: what the comparison writes in its --out folder
WRITES = ("comparison.md", "comparison.csv", "loss_curves.png", "stability.png", "stability.md")


def compare(run_dirs, out_dir, subset="test", title=None, log=print):
    if not run_dirs:
        raise RecipeError("no run folders given")
    baselines = {}
    runs = [summarize(d, subset, baselines) for d in run_dirs]
    finished = {i: log["valid"] for i, (row, log) in enumerate(runs) if row["status"] == "ok"}
    for i in stalled_runs(finished, {i: runs[i][0]["frequency_loss"] for i in finished}):
        runs[i][0]["status"] = "stalled"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [row for row, _ in runs]
    table = markdown_table(rows)
    atomic.write_text(out_dir / "comparison.md", table)
    with atomic.replacing(out_dir / "comparison.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic.replacing(out_dir / "loss_curves.png") as tmp:
        plot(runs, tmp, title)
    written = [out_dir / name for name in ("comparison.md", "comparison.csv", "loss_curves.png")]
    if any(log_["monitor"] for _, log_ in runs):
        with atomic.replacing(out_dir / "stability.png") as tmp:
            plot_stability(runs, tmp, title)
        atomic.write_text(out_dir / "stability.md", stability_table(runs))
        written += [out_dir / "stability.png", out_dir / "stability.md"]
    log(table)
    log(f"wrote {', '.join(str(p) for p in written)}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--out", required=True, help="where the table and the plot go")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    def body():
        outputs.Folder(args.out, "compare").claim(list(WRITES), hint="choose another --out")
        rows = compare(args.runs, args.out, args.subset, args.title)
        failed = [f"{run} (see {Path(run) / 'train.log'})" for run, row in zip(args.runs, rows)
                  if row["status"] == "failed"]  # fmt: skip
        if failed:  # the table is written; the exit status says that a run in it failed
            print(f"compare: error: {len(failed)} run(s) failed: {'; '.join(failed)}", file=sys.stderr)
            return 1
        return 0

    return command.run("compare", body)


if __name__ == "__main__":
    sys.exit(main())
