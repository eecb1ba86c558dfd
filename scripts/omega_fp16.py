"""Which trainable omegas can move in half precision, from each recipe's published schedule.

    python scripts/omega_fp16.py                       # prints the table
    python scripts/omega_fp16.py --out results/omega_fp16

Under ``--memory-efficient-fp16`` (admin-torch's recipes) the weights are fp16: fairseq's
Adam computes each step in fp32 and writes the result back to the fp16 weight, so a step is
lost unless it exceeds half the fp16 spacing at the omega's value (2^-10 in [1, 2), 2^-9 in
[2, 4), 2^-8 in [4, 8), 2^-7 in [8, 16)). Adam's step on one entry is the learning rate
times |m_hat| / sqrt(v_hat): exactly 1 on the first update and under a steady gradient, and
never more than a bound that follows from Cauchy-Schwarz over the two moving averages'
weights (:func:`adam_step_bound`: 1.03 after 10 updates, 1.70 in the long run for betas
(0.9, 0.98), reached only by gradients that grow steadily). The inverse-square-root
schedule rises linearly to the peak at the end of warm-up and then falls as
sqrt(warmup / update). For each recipe, depth and method this script gives the threshold
and the updates in which an omega can move: with a steady gradient (step = lr) and at most
(step = 1.70 lr). Under plain ``--fp16`` (Transformer-Clinic's recipes) the optimizer keeps
an fp32 master copy, so nothing is lost to rounding.

Both windows bound movement from above: a learning rate above the threshold lets an omega
move; whether it does depends on its gradients.
"""

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admin_fairseq.core.omega import calculate_init  # noqa: E402
from admin_fairseq.recipes.published import BIG_HUGE_LR, RECIPES  # noqa: E402

DEPTHS = ((6, 6), (18, 18), (60, 12), (100, 100))
#: the largest profiled omega of each depth that the Transformer-Clinic profiles published
#: (6L-6L En-De: 2.43 encoder / 3.00 decoder; 100L-100L: 8.84 / 11.25); profiled omegas
#: start at 1.0 in every stack
PUBLISHED_PROFILE_MAX = {(6, 6): (2.43, 3.00), (100, 100): (8.84, 11.25)}


def fp16_spacing(value):
    """The distance between ``value`` (>= 2^-14) and the next fp16 number above it."""
    return 2.0 ** (math.floor(math.log2(value)) - 10)


def smallest_surviving_step(value):
    """A step must exceed half the spacing to change an fp16 value (round to nearest)."""
    return fp16_spacing(value) / 2


ADAM_BETAS = (0.9, 0.98)  # every published recipe


def adam_step_bound(beta1, beta2, updates):
    """The largest |m_hat| / sqrt(v_hat) Adam can take on one entry at update ``updates``.

    m_hat and v_hat are weighted averages of the gradients g_i and of g_i^2, with weights
    a_i = (1 - beta1) beta1^(t-i) / (1 - beta1^t) and b_i = (1 - beta2) beta2^(t-i) / (1 -
    beta2^t); Cauchy-Schwarz gives m_hat^2 <= (sum a_i^2 / b_i) v_hat."""
    t = updates
    ratio = beta1 * beta1 / beta2
    geometric = (1 - ratio**t) / (1 - ratio)
    return math.sqrt((1 - beta1) ** 2 / (1 - beta1**t) ** 2 * (1 - beta2**t) / (1 - beta2) * geometric)


#: the bound after many updates (it grows with the update count towards this value)
LONG_RUN_BOUND = adam_step_bound(*ADAM_BETAS, 100_000)


def moving_window(peak, warmup, threshold):
    """``(first, last)`` updates whose learning rate exceeds ``threshold`` under fairseq's
    inverse_sqrt schedule (linear warm-up to ``peak``, then ``peak * sqrt(warmup / t)``), or
    None when even the peak does not."""
    if peak <= threshold:
        return None
    first = math.floor(warmup * threshold / peak) + 1
    last = math.ceil(warmup * (peak / threshold) ** 2) - 1
    return first, last


def recipe_schedules():
    """``{name: (peak lr, warm-up updates, precision)}`` of the published recipes."""
    schedules = {}
    for name, recipe in RECIPES.items():
        precision = "memory-efficient fp16" if "--memory-efficient-fp16" in recipe["fp16"] else "fp16"
        schedules[name] = (float(recipe["lr"]), int(recipe["warmup"]), precision)
    schedules["huge, big model"] = (float(BIG_HUGE_LR), int(RECIPES["huge"]["warmup"]),
                                    schedules["huge"][2])  # fmt: skip
    return schedules


def rows():
    out = []
    for recipe, (peak, warmup, precision) in recipe_schedules().items():
        if precision == "fp16":  # an fp32 master copy: every trainable omega, any depth
            out.append({"recipe": recipe, "precision": precision, "peak_lr": peak, "warmup": warmup,
                        "depth": "any", "stack": "both", "method": "admin, admin-profiled", "omega": None,
                        "threshold": None, "window": None, "window_at_most": None,
                        "moves": "always: fp32 master copy", "moves_at_most": "always"})  # fmt: skip
            continue
        for enc, dec in DEPTHS:
            if recipe == "iwslt" and (enc, dec) != (6, 6):
                continue  # the IWSLT'14 recipe is published for 6L-6L only
            for side, sublayers in (("encoder", 2 * enc), ("decoder", 3 * dec)):
                omegas = {"admin (vector, O(logn))": calculate_init(sublayers, "O(logn)")}
                if (enc, dec) in PUBLISHED_PROFILE_MAX:
                    top = PUBLISHED_PROFILE_MAX[(enc, dec)][0 if side == "encoder" else 1]
                    omegas["admin-profiled (largest published)"] = top
                for method, omega in omegas.items():
                    row = {"recipe": recipe, "precision": precision, "peak_lr": peak, "warmup": warmup,
                           "depth": f"{enc}-{dec}", "stack": side, "method": method, "omega": omega}
                    threshold = smallest_surviving_step(omega)
                    steady = moving_window(peak, warmup, threshold)
                    worst = moving_window(peak * LONG_RUN_BOUND, warmup, threshold)
                    row.update(threshold=threshold, window=steady, window_at_most=worst,
                               moves=_window_text(steady), moves_at_most=_window_text(worst))  # fmt: skip
                    out.append(row)
    return out


def _window_text(window):
    return f"updates {window[0]:,}-{window[1]:,}" if window else "never"


def markdown(table):
    lines = [
        "| recipe | precision | peak lr | warm-up | depth | stack | method | omega | smallest step kept "
        f"| can move, steady gradient (step = lr) | can move at most (step = {LONG_RUN_BOUND:.2f} lr) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        threshold = f"{r['threshold']:.6f}" if r["threshold"] is not None else "-"
        omega = f"{r['omega']:.3f}" if r["omega"] is not None else "-"
        lines.append(f"| {r['recipe']} | {r['precision']} | {r['peak_lr']:g} | {r['warmup']:,} | {r['depth']} | "
                     f"{r['stack']} | {r['method']} | {omega} | {threshold} | {r['moves']} | {r['moves_at_most']} |")  # fmt: skip
    lines += ["", "Scalar omegas (`admin-scalar`) and DeepNet's alpha are buffers: they never train, "
              "in any precision. Profiled omegas start at 1.0 (smallest step kept 0.000488) and "
              "grow with depth; the row gives the largest value published for that depth.", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", help="folder for table.md and table.json (default: print only)")
    args = parser.parse_args(argv)
    table = rows()
    text = markdown(table)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(text)
        (out / "table.json").write_text(json.dumps(table, indent=1) + "\n")
        print(f"written: {out / 'table.md'}, {out / 'table.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
