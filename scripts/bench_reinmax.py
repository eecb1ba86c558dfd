#!/usr/bin/env python
"""Benchmark ReinMax against straight-through (ST) and straight-through Gumbel-softmax.

    python scripts/bench_reinmax.py                # about 3 minutes on a 2-core CPU
    python scripts/bench_reinmax.py --quick        # about 15 seconds, for a first look

Three parts, all in one run, written to ``--out`` (``results.json`` and ``results.md``):

1. Gradient bias and spread against the exact gradient of ``E[f(D)]`` (computed by
   enumerating every outcome) for ``f`` of 3 categorical variables with 4 categories, over
   several random problems: ``quadratic`` ``v'Av + b'v`` (``v`` the flattened one-hot
   samples), ``cubic`` (the same plus ``(b'v)^3 / 3``) and ``oscillating``
   (``exp(b'v / 2) + sin(v'Av)``, large curvature). ``bias`` is ``|E[g] - grad| / |grad|``
   from ``--samples`` Monte Carlo draws; ``noise floor`` is the same ratio for the standard
   error of that mean, i.e. the smallest bias the run can resolve; ``rel. std`` is the
   estimator's per-sample spread ``sqrt(tr Cov) / |grad|``.
2. Polynomial programming (the ReinMax paper's toy task): 128 binary latents, loss
   ``mean_i |z_i - 0.45|^p``, Adam (lr 1e-3), 2,000 steps (300 with ``--quick``) of 100
   samples each, 5 seeds (2); reported is the exact expected loss at the end (the optimum,
   every ``z_i = 0``, is ``0.45^p``).
3. Speed: forward + backward of ReinMax and ST on the same logits, alternating the two,
   median time of each and the ratio ReinMax / ST.
"""

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from admin_fairseq.core.reinmax import gumbel_straight_through, reinmax, straight_through
from admin_fairseq.argtypes import positive_int

ESTIMATORS = {
    "ST": lambda x, gen: straight_through(x, generator=gen),
    "ST-Gumbel (tau 1)": lambda x, gen: gumbel_straight_through(x, tau=1.0, generator=gen),
    "ST-Gumbel (tau 0.5)": lambda x, gen: gumbel_straight_through(x, tau=0.5, generator=gen),
    "ReinMax (tau 1)": lambda x, gen: reinmax(x, tau=1.0, generator=gen),
}


def log(message):
    print(message, flush=True)


# --------------------------------------------------------------------------- part 1


def exact_gradient(logits, f):
    logits = logits.detach().double().requires_grad_(True)
    probs = torch.softmax(logits, dim=-1)
    n, k = logits.shape
    rows = torch.arange(n)
    expected = 0.0
    for outcome in itertools.product(range(k), repeat=n):
        one_hot = torch.zeros(n, k, dtype=torch.float64)
        one_hot[rows, torch.tensor(outcome)] = 1.0
        expected = expected + probs[rows, torch.tensor(outcome)].prod() * f(one_hot)
    return torch.autograd.grad(expected, logits)[0]


KINDS = ("quadratic", "cubic", "oscillating")


def make_problem(kind, n, k, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen)
    a = torch.randn(n * k, n * k, generator=gen, dtype=torch.float64)
    b = torch.randn(n * k, generator=gen, dtype=torch.float64)
    if kind == "quadratic":
        def f(d):
            v = d.reshape(-1)
            return v @ a @ v + b @ v
    elif kind == "cubic":  # the quadratic plus a third-order term
        def f(d):
            v = d.reshape(-1)
            return v @ a @ v + b @ v + (b @ v) ** 3 / 3
    else:  # "oscillating": every order of interaction, large curvature
        def f(d):
            v = d.reshape(-1)
            return torch.exp(0.5 * (b @ v)) + torch.sin(v @ a @ v)
    return logits, f


def gradient_stats(estimator, logits, f, samples, seed):
    batch = logits.expand(samples, *logits.shape).clone().requires_grad_(True)
    y_hard, _ = estimator(batch, torch.Generator().manual_seed(seed))
    torch.vmap(f)(y_hard.double()).sum().backward()
    grads = batch.grad.double().reshape(samples, -1)
    return grads.mean(0), grads.var(0)


def bias_table(samples, problems):
    rows = []
    for kind in KINDS:
        per_estimator = {name: {"bias": [], "floor": [], "std": []} for name in ESTIMATORS}
        for p in range(problems):
            logits, f = make_problem(kind, 3, 4, seed=100 + p)
            exact = exact_gradient(logits, f).reshape(-1)
            norm = exact.norm().item()
            for name, estimator in ESTIMATORS.items():
                mean, var = gradient_stats(estimator, logits, f, samples, seed=p)
                stats = per_estimator[name]
                stats["bias"].append((mean - exact).norm().item() / norm)
                stats["floor"].append((var.sum() / samples).sqrt().item() / norm)
                stats["std"].append(var.sum().sqrt().item() / norm)
        for name, stats in per_estimator.items():
            rows.append({
                "f": kind, "estimator": name,
                "bias": statistics.mean(stats["bias"]),
                "noise_floor": statistics.mean(stats["floor"]),
                "rel_std": statistics.mean(stats["std"]),
            })  # fmt: skip
            log(f"  {kind:13s} {name:20s} bias {rows[-1]['bias']:.4f}  "
                f"noise floor {rows[-1]['noise_floor']:.4f}  rel. std {rows[-1]['rel_std']:.2f}")  # fmt: skip
    return rows


# --------------------------------------------------------------------------- part 2


def polynomial_programming(estimator, power, steps, batch, seed, latents=128, target=0.45):
    torch.manual_seed(seed)
    logits = torch.zeros(latents, 2, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        y_hard, _ = estimator(logits.expand(batch, latents, 2), gen)
        z = y_hard[..., 1]
        loss = (z - target).abs().pow(power).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    q = torch.softmax(logits.detach(), -1)[:, 1]
    expected = (q * (1 - target) ** power + (1 - q) * target**power).mean()
    return expected.item()


def polynomial_table(steps, batch, seeds):
    rows = []
    for power in (1.5, 2.0, 3.0):
        optimum = 0.45**power
        for name, estimator in ESTIMATORS.items():
            losses = [polynomial_programming(estimator, power, steps, batch, s) for s in range(seeds)]
            rows.append({
                "p": power, "estimator": name, "optimum": optimum,
                "loss_mean": statistics.mean(losses),
                "loss_std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            })  # fmt: skip
            log(f"  p={power} {name:20s} expected loss {rows[-1]['loss_mean']:.5f} "
                f"(+- {rows[-1]['loss_std']:.5f}; optimum {optimum:.5f})")  # fmt: skip
    return rows


# --------------------------------------------------------------------------- part 3


def time_call(fn, logits, weight):
    x = logits.clone().requires_grad_(True)
    start = time.perf_counter()
    y_hard, y_soft = fn(x)
    ((y_hard * weight).sum() + (y_soft * weight).sum()).backward()
    return time.perf_counter() - start


def speed_table(shapes, repeats):
    rows = []
    for shape in shapes:
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(*shape, generator=gen)
        weight = torch.randn(*shape, generator=gen)
        fns = {
            "ReinMax": lambda x: reinmax(x, generator=gen),
            "ST": lambda x: straight_through(x, generator=gen),
        }
        times = {name: [] for name in fns}
        for name, fn in fns.items():  # warm-up
            for _ in range(3):
                time_call(fn, logits, weight)
        for _ in range(repeats):  # alternate, so drifts in machine load hit both alike
            for name, fn in fns.items():
                times[name].append(time_call(fn, logits, weight))
        med = {name: statistics.median(t) for name, t in times.items()}
        rows.append({
            "shape": list(shape), "reinmax_ms": 1e3 * med["ReinMax"], "st_ms": 1e3 * med["ST"],
            "ratio": med["ReinMax"] / med["ST"], "repeats": repeats,
        })  # fmt: skip
        log(f"  logits {tuple(shape)}: ReinMax {rows[-1]['reinmax_ms']:.2f} ms, "
            f"ST {rows[-1]['st_ms']:.2f} ms, ratio {rows[-1]['ratio']:.3f}")
    return rows


# --------------------------------------------------------------------------- output


def environment():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def markdown(results):
    env, settings = results["environment"], results["settings"]
    out = [
        f"Produced by `python scripts/{env['command']}` (torch {env['torch']}, "
        f"{env['threads']} threads, {env['cpu_count']} CPUs; {results['seconds']:.0f} s).",
        "",
        f"Gradient bias against the exact gradient ({settings['samples']:,} samples, mean "
        f"over {settings['problems']} random problems; 3 variables x 4 categories):",
        "",
        "| f | estimator | bias | noise floor | rel. std |",
        "|---|---|---|---|---|",
    ]
    out += [f"| {r['f']} | {r['estimator']} | {r['bias']:.4f} | {r['noise_floor']:.4f} | "
            f"{r['rel_std']:.2f} |" for r in results["bias"]]  # fmt: skip
    out += [
        "",
        f"Polynomial programming (128 binary latents, Adam 1e-3, {settings['steps']} steps x "
        f"{settings['batch']} samples, {settings['seeds']} seeds; expected loss at the end):",
        "",
        "| p | estimator | expected loss (mean +- std) | optimum |",
        "|---|---|---|---|",
    ]
    out += [f"| {r['p']} | {r['estimator']} | {r['loss_mean']:.5f} +- {r['loss_std']:.5f} | "
            f"{r['optimum']:.5f} |" for r in results["polynomial"]]  # fmt: skip
    out += [
        "",
        "Speed, forward + backward (median of alternating runs):",
        "",
        "| logits shape | ReinMax (ms) | ST (ms) | ReinMax / ST |",
        "|---|---|---|---|",
    ]
    out += [f"| {' x '.join(map(str, r['shape']))} | {r['reinmax_ms']:.2f} | {r['st_ms']:.2f} | "
            f"{r['ratio']:.3f} |" for r in results["speed"]]  # fmt: skip
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results/reinmax", help="output folder")
    parser.add_argument("--quick", action="store_true", help="fewer samples, steps and seeds")
    parser.add_argument("--samples", type=positive_int, default=None)
    args = parser.parse_args()
    quick = args.quick
    settings = {
        "samples": args.samples or (50_000 if quick else 200_000),
        "problems": 2 if quick else 5,
        "steps": 300 if quick else 2000,
        "batch": 100,
        "seeds": 2 if quick else 5,
        "speed_repeats": 10 if quick else 30,
    }
    env = environment()
    log(f"environment: {json.dumps(env)}")
    start = time.perf_counter()
    log("1/3 gradient bias against the exact gradient")
    bias = bias_table(settings["samples"], settings["problems"])
    log("2/3 polynomial programming")
    poly = polynomial_table(settings["steps"], settings["batch"], settings["seeds"])
    log("3/3 speed")
    speed = speed_table([(100, 128, 2), (4096, 512)], settings["speed_repeats"])
    results = {"environment": env, "settings": settings, "bias": bias, "polynomial": poly,
               "speed": speed, "seconds": time.perf_counter() - start}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
