#!/usr/bin/env python
"""Output change at initialisation vs depth: why deep Post-LN is unstable and Admin is not.

    python scripts/output_change.py                     # about 4 minutes on a 2-core CPU
    python scripts/output_change.py --quick             # fewer depths and one seed

For each variant and each depth L (encoder and decoder of L layers, built by
``transformer_admin`` exactly as ``fairseq-train`` builds them), the script measures
``E|F(x, W) - F(x, W*)|^2 / eps^2``: ``F`` is the encoder output (``2L`` residual
sub-layers) for a fixed batch of random tokens, in evaluation mode and float64, and ``W*``
adds to every weight matrix of the encoder layers Gaussian noise of ``eps = 1e-4`` times that
matrix's own standard deviation (a random perturbation of fixed relative size, one of the two
definitions in the Admin paper; the other, one optimizer step, is not used here). The mean
is over output elements and ``--seeds`` seeds (new initialisation, input and noise each).

Variants: Post-LN, Pre-LN, Admin O(logn) and O(1) (scalar omega), profiled Admin (the
original: omega from the variance recursion on a training batch with dropout 0.1), DeepNet.

Writes ``output_change.csv`` and ``output_change.png`` (linear and logarithmic depth axis)
to ``--out`` and prints, per variant, the change at the deepest setting, its growth from the
shallowest, and the slope of log(change) vs log(sub-layers) (1 = linear growth).
"""

import argparse
import csv
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from admin_fairseq.build import build_from_flags
from admin_fairseq.argtypes import positive_int

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "Post-LN": [],
    "Pre-LN": ["--encoder-normalize-before", "--decoder-normalize-before"],
    "Admin O(logn)": ["--admin-init"],
    "Admin O(1)": ["--admin-init", "--admin-output-change-scale", "O(1)"],
    "Admin profiled": ["--admin-init", "--admin-profile"],
    "DeepNet": ["--deepnet"],
}
DEPTHS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 50, 70, 100]
QUICK_DEPTHS = [1, 2, 4, 8, 16, 32]
EPS = 1e-4
WIDTH = ["--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim",
         "128", "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4"]  # fmt: skip


def _dictionary_dir():
    path = Path(tempfile.mkdtemp(prefix="output_change_"))
    words = "".join(f"w{i} {1000 - i}\n" for i in range(200))
    for lang in ("src", "tgt"):
        (path / f"dict.{lang}.txt").write_text(words)
    return path


def build_model(dict_dir, layers, flags, seed):
    argv = ["--user-dir", str(REPO / "admin_fairseq"), "-s", "src", "-t", "tgt",
            "--arch", "transformer_admin", *WIDTH, "--encoder-layers", str(layers),
            "--decoder-layers", str(layers), "--dropout", "0.1", *flags]  # fmt: skip
    model, task, _ = build_from_flags(dict_dir, argv, seed=seed)
    return model.double(), task


def measure(dict_dir, layers, flags, seed, batch=8, length=20):
    model, task = build_model(dict_dir, layers, flags, seed)
    gen = torch.Generator().manual_seed(seed)
    nspecial, vocab = task.source_dictionary.nspecial, len(task.source_dictionary)
    src = torch.randint(nspecial, vocab, (batch, length), generator=gen)
    lengths = torch.full((batch,), length, dtype=torch.long)
    if "--admin-profile" in flags:  # the original Admin profiles a training batch first
        prev = torch.randint(nspecial, vocab, (batch, length), generator=gen)
        model.train()
        model.profile_omegas(src, lengths, prev)
    model.eval()
    with torch.no_grad():
        before = model.encoder(src, lengths)["encoder_out"][0]
        for name, param in model.encoder.layers.named_parameters():
            if param.dim() >= 2:
                noise = torch.randn(param.shape, generator=gen, dtype=param.dtype)
                param.add_(EPS * param.std() * noise)
        after = model.encoder(src, lengths)["encoder_out"][0]
    return ((after - before) ** 2).mean().item() / EPS**2


def log_log_slope(sublayers, changes):
    xs, ys = [math.log(n) for n in sublayers], [math.log(c) for c in changes]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def run(depths, seeds, variants, log=print):
    dict_dir = _dictionary_dir()
    rows, total, done = [], len(depths) * len(variants), 0
    start = time.perf_counter()
    for name in variants:
        for layers in depths:
            values = [measure(dict_dir, layers, VARIANTS[name], seed) for seed in range(seeds)]
            done += 1
            rows.append({
                "variant": name, "layers": layers, "sublayers": 2 * layers,
                "output_change": statistics.mean(values),
                "std_over_seeds": statistics.stdev(values) if len(values) > 1 else 0.0,
                "seeds": seeds,
            })  # fmt: skip
            log(f"[{done}/{total}] {name:15s} {layers:3d} layers: output change "
                f"{rows[-1]['output_change']:10.3f}  ({time.perf_counter() - start:.0f} s)")
    return rows


def summarise(rows):
    summary = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        n = [r["sublayers"] for r in mine]
        c = [r["output_change"] for r in mine]
        summary[name] = {"deepest": c[-1], "growth": c[-1] / c[0], "slope": log_log_slope(n, c),
                         "sublayers": (n[0], n[-1])}  # fmt: skip
    return summary


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        for ax in axes:
            ax.plot([r["sublayers"] for r in mine], [r["output_change"] for r in mine],
                    marker="o", markersize=3, label=name)  # fmt: skip
    for ax, scale in zip(axes, ("linear", "log")):
        ax.set_xscale(scale)
        ax.set_xlabel("residual sub-layers in the encoder (2 x layers)" +
                      (", log scale" if scale == "log" else ""))  # fmt: skip
        ax.set_ylabel("output change |F(x,W) - F(x,W*)|^2 / eps^2")
        ax.grid(alpha=0.3)
    axes[0].set_title("linear depth axis")
    axes[1].set_title("logarithmic depth axis")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Output change at initialisation (random relative perturbation eps = {EPS:g})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results/output_change", help="output folder")
    parser.add_argument("--quick", action="store_true", help=f"depths {QUICK_DEPTHS}, one seed")
    parser.add_argument("--depths", type=positive_int, nargs="+", help=f"layers per stack (default {DEPTHS})")
    parser.add_argument("--seeds", type=positive_int, default=None, help="seeds per point (default 8)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    for noisy in ("fairseq", "admin_fairseq", "matplotlib", "hydra"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)  # hydra's deprecation notes
    torch.set_num_threads(min(2, torch.get_num_threads()))
    depths = args.depths or (QUICK_DEPTHS if args.quick else DEPTHS)
    seeds = args.seeds or (1 if args.quick else 8)
    rows = run(depths, seeds, args.variants)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "output_change.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / "output_change.png")
    command = " ".join(["python scripts/output_change.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"Produced by `{command}` (torch {torch.__version__}, {seeds} seed(s)).", "",
             "| variant | change at deepest | growth from shallowest | log-log slope |",
             "|---|---|---|---|"]  # fmt: skip
    for name, s in summarise(rows).items():
        lines.append(f"| {name} | {s['deepest']:.2f} | {s['growth']:.1f}x "
                     f"({s['sublayers'][0]} -> {s['sublayers'][1]} sub-layers) | {s['slope']:.2f} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'output_change.csv'}, {out / 'output_change.png'}, {out / 'summary.md'}")


if __name__ == "__main__":
    main()
