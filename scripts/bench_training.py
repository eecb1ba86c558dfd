#!/usr/bin/env python
"""Does Admin cost anything? Training and inference speed and memory, in one run.

    python scripts/bench_training.py            # about 15 minutes on a 2-core CPU
    python scripts/bench_training.py --quick    # about 5 minutes, fewer and shorter runs

Parts (each prints its figures; all are written to ``--out`` as ``results.json`` and
``results.md``):

1. Training throughput through ``fairseq-train`` on the Bible slice (en-fr, 3,000 pairs,
   sentencepiece 1k), the same shape with and without ``--admin-init`` (scalar and vector
   omega) and DeepNet, at two depths (6L-6L and 18L-18L, width 128), the variants
   alternating within each round so that drifts in machine load hit them alike. Per run:
   fairseq's words/s (median of its log intervals, the first dropped as warm-up), seconds
   per update, and the process's peak resident memory (``wait4``'s ``ru_maxrss``). Reported:
   medians over rounds and the ratios to vanilla Post-LN. Then (1b) the more precise
   measurement: the same models built in one process, taking turns step by step on the same
   real batches, with the median of the paired per-step ratios.
2. The residual alone, forward + backward: our ``OmegaResidual`` (one ``addcmul``) against
   the reference library's formula ``x * omega + f_x`` and against the plain ``x + f_x``.
3. Scaling: seconds per update vs depth (6, 12, 18, 36 layers per stack) for vanilla and
   Admin, with the slope of a straight-line fit and a plot.
4. Inference: ``fairseq-generate`` speed (tokens/s) of a trained Admin model, the same model
   exported to a plain ``transformer``, and vanilla Post-LN of the same shape.
"""

import argparse
import itertools
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from admin_fairseq.core.residual import OmegaResidual
from admin_fairseq.recipes import prepare

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VARIANTS = {
    "Post-LN": [],
    "Admin (scalar)": ["--admin-init"],
    "Admin (vector)": ["--admin-init", "--admin-as-parameter"],
    "DeepNet": ["--deepnet"],
}
WIDTH = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim",
         "512", "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--share-all-embeddings"]  # fmt: skip
TRAIN = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3", "--lr-scheduler",
         "inverse_sqrt", "--warmup-updates", "100", "--criterion", "label_smoothed_cross_entropy",
         "--label-smoothing", "0.1", "--max-tokens", "1024", "--seed", "1", "--no-progress-bar",
         "--log-format", "simple", "--num-workers", "0", "--no-save", "--disable-validation"]  # fmt: skip


def log(message):
    print(message, flush=True)


def run_measured(cmd, cwd):
    """Run ``cmd``; return (output, peak RSS in MiB of that process, wall seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))  # fmt: skip
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    return output, usage.ru_maxrss / 1024, time.perf_counter() - start


def train_once(data, layers, flags, updates, log_interval, workdir):
    cmd = [str(BIN / "fairseq-train"), str(data), "--user-dir", str(REPO / "admin_fairseq"),
           "--arch", "transformer_admin", "--encoder-layers", str(layers), "--decoder-layers",
           str(layers), *WIDTH, *flags, *TRAIN, "--max-update", str(updates),
           "--log-interval", str(log_interval)]  # fmt: skip
    output, rss, _ = run_measured(cmd, workdir)
    wps = [float(x) for x in re.findall(r"train_inner .*?wps=([\d.]+)", output)][1:]
    ups = [float(x) for x in re.findall(r"train_inner .*?ups=([\d.]+)", output)][1:]
    if not wps:
        raise RuntimeError(f"no fairseq log intervals to measure; raise the updates\n{output[-2000:]}")
    return {"wps": statistics.median(wps), "sec_per_update": 1 / statistics.median(ups), "peak_rss_mib": rss}


def training_throughput(data, depths, rounds, updates, workdir):
    runs = {(d, v): [] for d in depths for v in VARIANTS}
    total, done = len(runs) * rounds, 0
    for r in range(rounds):
        for depth in depths:
            for name, flags in VARIANTS.items():
                runs[depth, name].append(train_once(data, depth, flags, updates, 10, workdir))
                done += 1
                last = runs[depth, name][-1]
                log(f"  [{done}/{total}] round {r + 1} {depth}L-{depth}L {name:15s} "
                    f"{last['wps']:8.0f} wps  {last['sec_per_update']:.3f} s/update  "
                    f"{last['peak_rss_mib']:.0f} MiB")  # fmt: skip
    rows = []
    for depth in depths:
        base = {k: statistics.median(x[k] for x in runs[depth, "Post-LN"]) for k in runs[depth, "Post-LN"][0]}
        for name in VARIANTS:
            med = {k: statistics.median(x[k] for x in runs[depth, name]) for k in base}
            rows.append({"layers": depth, "variant": name, **med,
                         "speed_ratio": med["wps"] / base["wps"],
                         "memory_ratio": med["peak_rss_mib"] / base["peak_rss_mib"],
                         "rounds": rounds})  # fmt: skip
    return rows


def interleaved_step_time(data, depths, steps, warmup=5):
    """Seconds per training step (forward, backward, Adam) of each variant, measured in one
    process on the same real batches, the variants taking turns step by step (the order
    rotating), so that machine-load drifts hit all of them alike. Medians and ratios."""
    from admin_fairseq.build import build_from_flags

    rows = []
    for depth in depths:
        models = {}
        for name, flags in VARIANTS.items():
            argv = ["--user-dir", str(REPO / "admin_fairseq"), "--arch", "transformer_admin",
                    "--encoder-layers", str(depth), "--decoder-layers", str(depth), *WIDTH, *flags,
                    *TRAIN]  # fmt: skip
            model, task, cfg = build_from_flags(data, argv, seed=1)
            model.train()
            criterion = task.build_criterion(cfg.criterion)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
            models[name] = (model, criterion, optimizer)
        task.load_dataset("train")
        iterator = task.get_batch_iterator(task.dataset("train"), max_tokens=1024, seed=1)
        batches = list(itertools.islice(iterator.next_epoch_itr(shuffle=True), 20))
        times = {name: [] for name in models}
        names = list(models)
        for step in range(warmup + steps):
            sample = batches[step % len(batches)]
            for name in names[step % len(names):] + names[: step % len(names)]:
                model, criterion, optimizer = models[name]
                start = time.perf_counter()
                loss, _, _ = criterion(model, sample)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if step >= warmup:
                    times[name].append(time.perf_counter() - start)
        for name in names:
            # paired: each step's time against Post-LN's on the same batch, same moment
            ratios = [b / t for b, t in zip(times["Post-LN"], times[name])]
            q = statistics.quantiles(ratios, n=4)
            rows.append({"layers": depth, "variant": name, "sec_per_step": statistics.median(times[name]),
                         "speed_ratio": statistics.median(ratios), "ratio_iqr": [q[0], q[2]],
                         "steps": steps})  # fmt: skip
            log(f"  {depth}L-{depth}L {name:15s} {rows[-1]['sec_per_step']:.4f} s/step, speed "
                f"{rows[-1]['speed_ratio']:.3f} x Post-LN (IQR {q[0]:.3f}-{q[2]:.3f})")
    return rows


def _time_residual(fn, x, f_x, repeats):
    times = []
    for i in range(repeats + 3):
        a, b = x.clone().requires_grad_(True), f_x.clone().requires_grad_(True)
        start = time.perf_counter()
        fn(a, b).sum().backward()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def residual_micro(repeats):
    rows = []
    shape = (64, 32, 512)  # (time, batch, channels)
    gen = torch.Generator().manual_seed(0)
    x, f_x = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    for form, as_param in (("scalar buffer", False), ("vector parameter", True)):
        ours = OmegaResidual(2.0, as_parameter=as_param, embed_dim=shape[-1])
        omega = ours.omega
        fns = {
            "ours (addcmul)": ours,
            "reference (x * omega + f_x)": lambda a, b: a * omega + b,
            "plain (x + f_x)": lambda a, b: a + b,
        }
        times = {name: [] for name in fns}
        for _ in range(3):  # alternate the three, three times
            for name, fn in fns.items():
                times[name].append(_time_residual(fn, x, f_x, repeats))
        ref = statistics.median(times["reference (x * omega + f_x)"])
        for name in fns:
            med = statistics.median(times[name])
            rows.append({"omega": form, "implementation": name, "ms": 1e3 * med, "ratio_to_reference": med / ref})
            log(f"  {form:16s} {name:28s} {1e3 * med:7.3f} ms  ({med / ref:.3f} x reference)")
    return rows


def scaling(data, depths, updates, workdir):
    rows = []
    for depth in depths:
        for name in ("Post-LN", "Admin (scalar)"):
            result = train_once(data, depth, VARIANTS[name], updates, 10, workdir)
            rows.append({"layers": depth, "variant": name, **result})
            log(f"  {depth:3d}L-{depth}L {name:15s} {result['sec_per_update']:.3f} s/update")
    slopes = {}
    for name in ("Post-LN", "Admin (scalar)"):
        pts = [(r["layers"], r["sec_per_update"]) for r in rows if r["variant"] == name]
        mx, my = statistics.mean(p[0] for p in pts), statistics.mean(p[1] for p in pts)
        slopes[name] = sum((a - mx) * (b - my) for a, b in pts) / sum((a - mx) ** 2 for a, _ in pts)
    return rows, slopes


def plot_scaling(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name in ("Post-LN", "Admin (scalar)"):
        pts = [(r["layers"], r["sec_per_update"]) for r in rows if r["variant"] == name]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("layers per stack (encoder = decoder)")
    ax.set_ylabel("seconds per update (CPU, fp32)")
    ax.set_title("Step time vs depth")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def inference(data, workdir, layers, updates):
    ckpts = {}
    for name, flags in (("Post-LN", []), ("Admin (vector)", ["--admin-init", "--admin-as-parameter"])):
        save_dir = Path(workdir) / f"ckpt-{len(ckpts)}"
        # --layernorm-embedding (both models, same shape) makes the Admin model exportable
        cmd = [str(BIN / "fairseq-train"), str(data), "--user-dir", str(REPO / "admin_fairseq"),
               "--arch", "transformer_admin", "--encoder-layers", str(layers), "--decoder-layers",
               str(layers), *WIDTH, *flags, "--layernorm-embedding",
               *[t for t in TRAIN if t not in ("--no-save", "--disable-validation")],
               "--max-update", str(updates), "--save-dir", str(save_dir), "--no-epoch-checkpoints",
               "--log-interval", "50"]  # fmt: skip
        run_measured(cmd, workdir)
        ckpts[name] = save_dir / "checkpoint_last.pt"
    exported = Path(workdir) / "exported.pt"
    run_measured([sys.executable, str(REPO / "scripts" / "export_transformer.py"), "--input",
                  str(ckpts["Admin (vector)"]), "--output", str(exported), "--no-check"], workdir)  # fmt: skip
    models = {"Post-LN": (ckpts["Post-LN"], True), "Admin (vector)": (ckpts["Admin (vector)"], True),
              "Admin exported to transformer": (exported, False)}  # fmt: skip
    speeds = {name: [] for name in models}
    for _ in range(3):
        for name, (path, plugin) in models.items():
            cmd = [str(BIN / "fairseq-generate"), str(data), "--path", str(path), "--gen-subset",
                   "test", "--beam", "4", "--batch-size", "32", "--required-batch-size-multiple", "1",
                   *(["--user-dir", str(REPO / "admin_fairseq")] if plugin else [])]  # fmt: skip
            output, _, _ = run_measured(cmd, workdir)
            match = re.search(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s", output)
            tokens, secs = int(match.group(2).replace(",", "")), float(match.group(3))
            speeds[name].append(tokens / secs)
    base = statistics.median(speeds["Post-LN"])
    rows = []
    for name, values in speeds.items():
        med = statistics.median(values)
        rows.append({"model": name, "tokens_per_s": med, "ratio_to_post_ln": med / base})
        log(f"  {name:30s} {med:8.0f} tokens/s  ({med / base:.3f} x Post-LN)")
    return rows


def environment():
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cpu": _cpu_name(), "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": " ".join(["python scripts/bench_training.py", *sys.argv[1:]]),
    }  # fmt: skip


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(res):
    env = res["environment"]
    out = [f"Produced by `{env['command']}` on {env['cpu']} ({env['cpu_count']} CPUs, torch "
           f"{env['torch']}, fp32; {res['seconds'] / 60:.1f} minutes).", "",
           f"Training through fairseq-train (width 128, medians of {res['settings']['rounds']} "
           "alternating rounds):", "",
           "| layers | variant | words/s | s/update | peak RSS (MiB) | speed / Post-LN | memory / Post-LN |",
           "|---|---|---|---|---|---|---|"]  # fmt: skip
    out += [f"| {r['layers']}L-{r['layers']}L | {r['variant']} | {r['wps']:.0f} | {r['sec_per_update']:.3f} | "
            f"{r['peak_rss_mib']:.0f} | {r['speed_ratio']:.3f} | {r['memory_ratio']:.3f} |"
            for r in res["training"]]  # fmt: skip
    out += ["", "Step time in one process, the variants taking turns on the same batches (median of "
            f"{res['settings']['interleaved_steps']} paired per-step ratios, Post-LN time / variant time; "
            "IQR = interquartile range of those ratios):", "",
            "| layers | variant | s/step | speed / Post-LN | IQR |", "|---|---|---|---|---|"]  # fmt: skip
    out += [f"| {r['layers']}L-{r['layers']}L | {r['variant']} | {r['sec_per_step']:.3f} | "
            f"{r['speed_ratio']:.3f} | {r['ratio_iqr'][0]:.3f}-{r['ratio_iqr'][1]:.3f} |"
            for r in res["interleaved"]]  # fmt: skip
    out += ["", "The residual alone, forward + backward on a 64 x 32 x 512 fp32 tensor:", "",
            "| omega | implementation | ms | / reference |", "|---|---|---|---|"]
    out += [f"| {r['omega']} | {r['implementation']} | {r['ms']:.3f} | {r['ratio_to_reference']:.3f} |"
            for r in res["residual"]]  # fmt: skip
    slopes = res["scaling_slopes"]
    out += ["", "Seconds per update vs depth (one run each; slope of a straight-line fit, seconds "
            f"per added layer pair: Post-LN {slopes['Post-LN']:.4f}, Admin {slopes['Admin (scalar)']:.4f}):", "",
            "| layers | Post-LN s/update | Admin s/update |", "|---|---|---|"]  # fmt: skip
    by = {(r["layers"], r["variant"]): r["sec_per_update"] for r in res["scaling"]}
    for depth in sorted({r["layers"] for r in res["scaling"]}):
        out.append(f"| {depth} | {by[depth, 'Post-LN']:.3f} | {by[depth, 'Admin (scalar)']:.3f} |")
    out += ["", "Generation (fairseq-generate, beam 4, 100 test sentences, medians of 3 alternating runs):", "",
            "| model | tokens/s | / Post-LN |", "|---|---|---|"]  # fmt: skip
    out += [f"| {r['model']} | {r['tokens_per_s']:.0f} | {r['ratio_to_post_ln']:.3f} |" for r in res["inference"]]
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results/bench_training")
    parser.add_argument("--data", default=None, help="work folder for the Bible slice (default: a cache)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    settings = {"rounds": 1 if args.quick else 3, "updates": 40,
                "depths": [6] if args.quick else [6, 18],
                "scaling_depths": [6, 12] if args.quick else [6, 12, 18, 36],
                "micro_repeats": 10 if args.quick else 30,
                "interleaved_steps": 10 if args.quick else 40}  # fmt: skip
    env = environment()
    log(f"environment: {json.dumps(env)}")
    start = time.perf_counter()
    from admin_fairseq.corpora.bible import cache_dir

    data_dir = Path(args.data) if args.data else cache_dir() / "bench-bible-en-fr"
    log("0/4 data")
    prepare.prepare("bible-en-fr", data_dir, vocab_size=1000, train_size=3000, valid_size=100,
                    test_size=100, log=lambda m: log("  " + m))  # fmt: skip
    data = {"bin": data_dir / "bin"}
    with tempfile.TemporaryDirectory() as workdir:
        log("1/4 training throughput")
        training = training_throughput(data["bin"], settings["depths"], settings["rounds"],
                                       settings["updates"], workdir)  # fmt: skip
        log("1b/4 interleaved step time in one process")
        interleaved = interleaved_step_time(data["bin"], settings["depths"], settings["interleaved_steps"])
        log("2/4 residual micro-benchmark")
        residual = residual_micro(settings["micro_repeats"])
        log("3/4 step time vs depth")
        scale_rows, slopes = scaling(data["bin"], settings["scaling_depths"], 30, workdir)
        log("4/4 generation speed")
        infer = inference(data["bin"], workdir, 6, 40 if args.quick else 150)
    res = {"environment": env, "settings": settings, "training": training,
           "interleaved": interleaved, "residual": residual,
           "scaling": scale_rows, "scaling_slopes": slopes, "inference": infer,
           "seconds": time.perf_counter() - start}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "results.md").write_text(markdown(res))
    plot_scaling(scale_rows, out / "step_time_vs_depth.png")
    print(markdown(res))
    log(f"wrote {out}/results.json, results.md and step_time_vs_depth.png")


if __name__ == "__main__":
    main()
