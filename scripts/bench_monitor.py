#!/usr/bin/env python
"""What the stability monitor costs: the share of training time it adds, measured in the run.

    python scripts/bench_monitor.py                 # about 9 minutes on a 2-core CPU
    python scripts/bench_monitor.py --quick         # about 4 minutes

One ``fairseq-train`` process per interval trains the model (Admin, vector omegas, 6L-6L
width 128 by default) on the Bible slice (en-fr, 3,000 pairs, sentencepiece 1k) with
``--admin-monitor-interval N``, and times, at every update, fairseq's ``Trainer.train_step``
as the monitor wraps it (what training takes with the monitor) and the monitor's own work in
it: everything its two wrappers do around fairseq's ``train_step`` and ``clip_grad_norm``
(the measurements every ``N`` updates, and the checks at every update). The time per update
without the monitor is the first minus the second, so the ratio of the two comes from the
same updates on the same batches. (Two separate runs, with and without, differed here by
more than the monitor costs: one such try gave 275, 251 and 210 ms per update for off, every
100 and every 10, in that order; blocks of 100 updates of one run, by 180 to 290 ms, as
their batches differ.) On a GPU every timing ends with a synchronisation.

Intervals: ``100`` (the docs' suggestion, and the train step's ``--monitor`` without a
number) and ``10`` (the main job's). The first :data:`WARMUP` updates are not counted.
"""

import argparse
import json
import subprocess
import sys
import tempfile

import torch

from bench_common import ENV, admin_training_flags, bible_slice, device, write_results  # noqa: E402

from admin_fairseq.argtypes import positive_int  # noqa: E402
from admin_fairseq.monitor import DEFAULT_INTERVAL  # noqa: E402

INTERVALS = (DEFAULT_INTERVAL, 10)
WARMUP = 20

#: run in the training process: fairseq-train with timers around the monitor's wrappers and
#: the fairseq methods they call; prints "TIMES <json>" at the end
_WORKER = """
import json, sys, time, torch
from admin_fairseq import monitor, plugin
plugin.load()
from fairseq_cli import train

WARMUP = int(sys.argv.pop(1))
totals = {"updates": 0, "with_monitor": 0.0, "monitor_own": 0.0, "measurements": 0}
clock = {"inner": 0.0}

def now():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()

def timed_inner(function):
    def inner(*args):
        start = now()
        try:
            return function(*args)
        finally:
            clock["inner"] += now() - start
    return inner

around_train_step, around_clip = monitor.StabilityMonitor.around_train_step, monitor.StabilityMonitor.around_clip_grad_norm

def train_step(self, trainer, step, samples, raise_oom):
    clock["inner"] = 0.0
    start = now()
    out = around_train_step(self, trainer, timed_inner(step), samples, raise_oom)
    spent = now() - start
    own = spent - clock["inner"] + clock.get("clip_own", 0.0)
    clock["clip_own"] = 0.0
    if trainer.get_num_updates() > WARMUP:
        totals["updates"] += 1
        totals["with_monitor"] += spent
        totals["monitor_own"] += own
        totals["measurements"] += int(trainer.get_num_updates() % self.interval == 0)
    return out

def clip(self, trainer, clip_grad_norm, clip_norm):
    saved = clock["inner"]
    clock["inner"] = 0.0
    start = now()
    try:
        return around_clip(self, trainer, timed_inner(clip_grad_norm), clip_norm)
    finally:
        spent = now() - start
        clock["clip_own"] = clock.get("clip_own", 0.0) + spent - clock["inner"]
        clock["inner"] = saved

monitor.StabilityMonitor.around_train_step = train_step
monitor.StabilityMonitor.around_clip_grad_norm = clip
sys.argv = ["fairseq-train", *sys.argv[1:]]
try:
    train.cli_main()
finally:
    print("TIMES " + json.dumps(totals), flush=True)
"""


def train_once(data, layers, interval, updates, cpu, workdir):
    cmd = [sys.executable, "-c", _WORKER, str(WARMUP), *admin_training_flags(data, layers, updates, log_interval=100),
           "--disable-validation", "--admin-monitor-interval", str(interval), *(["--cpu"] if cpu else [])]  # fmt: skip
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=ENV)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"the run with interval {interval} failed:\n{output[-3000:]}")
    times = json.loads(next(line for line in output.splitlines() if line.startswith("TIMES "))[6:])
    expected = updates // interval - WARMUP // interval
    if times["updates"] != updates - WARMUP or times["measurements"] != expected:
        raise RuntimeError(f"timed {times['updates']} updates and {times['measurements']} measurements, "
                           f"expected {updates - WARMUP} and {expected}")  # fmt: skip
    with_monitor = times["with_monitor"] / times["updates"]
    own = times["monitor_own"] / times["updates"]
    return {"interval": interval, "updates": times["updates"], "measurements": times["measurements"],
            "ms_with": 1000 * with_monitor, "ms_without": 1000 * (with_monitor - own),
            "ms_monitor": 1000 * own, "ratio": with_monitor / (with_monitor - own)}  # fmt: skip


def markdown(result):
    head = ["monitor interval", "measurements", "ms/update with the monitor", "of which the monitor's",
            "ms/update without", "time with / without"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append(f"| every {r['interval']} updates | {r['measurements']} | {r['ms_with']:.1f} | "
                     f"{r['ms_monitor']:.2f} | {r['ms_without']:.1f} | {r['ratio']:.4f} |")  # fmt: skip
    lines += ["", f"`{result['command']}` on {result['device_name']} ({result['device']}), "
              f"{result['layers']}L-{result['layers']}L width 128 Admin (vector omegas), {result['updates']} "
              f"updates per interval, the first {WARMUP} not timed; torch {result['torch']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results/bench_monitor", help="folder for results.json/.md")
    parser.add_argument("--data", help="a prepared Bible slice (default: prepared in a cache folder)")
    parser.add_argument("--layers", type=positive_int, default=6)
    parser.add_argument("--updates", type=positive_int, default=600)
    parser.add_argument("--quick", action="store_true", help="220 updates per interval")
    parser.add_argument("--cpu", action="store_true", help="on the CPU even when a GPU is there")
    args = parser.parse_args(argv)
    if args.quick:
        args.updates = 220
    if args.updates < WARMUP + max(INTERVALS):
        parser.error(f"--updates must be at least {WARMUP + max(INTERVALS)}")
    cpu = args.cpu or not torch.cuda.is_available()
    data = bible_slice(args.data)
    device_type, name = device(cpu)
    print(f"the monitor's own time in training, on {name}: {args.layers}L-{args.layers}L, {args.updates} "
          "updates per interval")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for interval in INTERVALS:
            row = train_once(data, args.layers, interval, args.updates, cpu, workdir)
            print(f"  every {interval}: {row['ms_with']:.1f} ms/update, {row['ms_monitor']:.2f} of them the "
                  f"monitor's ({row['measurements']} measurements): x{row['ratio']:.4f}")  # fmt: skip
            rows.append(row)
    command = " ".join(["python scripts/bench_monitor.py", *(argv if argv is not None else sys.argv[1:])])
    result = {"command": command, "device": device_type, "device_name": name, "layers": args.layers,
              "updates": args.updates, "torch": torch.__version__, "rows": rows}  # fmt: skip
    write_results(args.out, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
