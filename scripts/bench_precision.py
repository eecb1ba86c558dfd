#!/usr/bin/env python
"""fp32 against bf16 (and fp16 on a GPU): step time, peak memory and loss, in one run.

    python scripts/bench_precision.py               # about 10 minutes on a 2-core CPU
    python scripts/bench_precision.py --quick       # about 3 minutes

The same model (Admin, vector omegas, 6L-6L width 128 by default) trains for ``--updates``
updates through ``fairseq-train`` on the Bible slice (en-fr, 3,000 pairs, sentencepiece
1k), once per precision per round, the precisions taking turns so that drifts in machine
load hit them alike:

- ``fp32``: no precision flag;
- ``bf16``: ``--bf16-autocast``, the recipes' ``--precision bf16`` (fp32 weights, bf16
  compute; on a CPU through torch's CPU autocast);
- ``fp16``: ``--memory-efficient-fp16``, the published recipes' setting (GPU only: fairseq
  0.12's fp16 trainer needs CUDA).

Per run: seconds per update (the median of fairseq's log intervals, the first dropped as
warm-up), the peak memory (on a GPU, torch's peak allocated CUDA memory; on a CPU, the
process's peak resident memory), and the training and validation loss after the last
update. Reported: medians over rounds and ratios to fp32 of the same run. On a CPU without
bf16 units (most), bf16 is slower than fp32: the figures say so as they are.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import torch

from bench_common import ENV, admin_training_flags, bible_slice, device, write_results  # noqa: E402

from admin_fairseq import fairseq_log  # noqa: E402
from admin_fairseq.argtypes import positive_int  # noqa: E402

#: run in the training process: fairseq-train, then its peak CUDA memory on the last line
_WORKER = """
import sys, torch
from fairseq_cli import train
sys.argv = ["fairseq-train", *sys.argv[1:]]
try:
    train.cli_main()
finally:
    print("PEAK_CUDA_BYTES", torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0, flush=True)
"""
PRECISIONS = {"fp32": [], "bf16": ["--bf16-autocast"], "fp16": ["--memory-efficient-fp16"]}


def train_once(data, layers, precision, updates, cpu, workdir):
    cmd = [sys.executable, "-c", _WORKER, *admin_training_flags(data, layers, updates, log_interval=10),
           *PRECISIONS[precision], *(["--cpu"] if cpu else [])]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the {precision} run failed:\n{output[-3000:]}")
    lines = output.splitlines()
    inner = [s for _, s in fairseq_log.records(lines, "train_inner")]
    valid = [s for _, s in fairseq_log.records(lines, "valid")]
    if len(inner) < 2 or not valid:
        raise RuntimeError(f"too few log intervals to measure; raise --updates\n{output[-2000:]}")
    cuda_peak = int(next(line.split()[1] for line in reversed(lines) if line.startswith("PEAK_CUDA_BYTES")))
    return {
        "sec_per_update": 1 / statistics.median(float(s["ups"]) for s in inner[1:]),
        "peak_memory_mib": cuda_peak / 2**20 if not cpu else usage.ru_maxrss / 1024,
        "train_loss": float(inner[-1]["loss"]),
        "valid_loss": float(valid[-1]["valid_loss"]),
    }


def measure(data, layers, precisions, rounds, updates, cpu, workdir, log=print):
    runs = {p: [] for p in precisions}
    for r in range(rounds):
        order = precisions[r % len(precisions):] + precisions[: r % len(precisions)]
        for precision in order:
            row = train_once(data, layers, precision, updates, cpu, workdir)
            runs[precision].append(row)
            log(f"  round {r + 1} {precision}: {row['sec_per_update']:.3f} s/update, "
                f"{row['peak_memory_mib']:.0f} MiB, loss {row['train_loss']:.3f}, valid {row['valid_loss']:.3f}")
    med = {p: {k: statistics.median(x[k] for x in runs[p]) for k in runs[p][0]} for p in precisions}
    base = med["fp32"]
    return [{"precision": p, **med[p], "speed_ratio": base["sec_per_update"] / med[p]["sec_per_update"],
             "memory_ratio": med[p]["peak_memory_mib"] / base["peak_memory_mib"],
             "valid_loss_ratio": med[p]["valid_loss"] / base["valid_loss"], "rounds": rounds}
            for p in precisions]  # fmt: skip


def markdown(result):
    head = ["precision", "s/update", "speed vs fp32", "peak memory (MiB)", "memory vs fp32",
            f"train loss after {result['updates']}", "valid loss", "valid loss vs fp32"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        lines.append(f"| {r['precision']} | {r['sec_per_update']:.3f} | {r['speed_ratio']:.2f} | "
                     f"{r['peak_memory_mib']:.0f} | {r['memory_ratio']:.2f} | {r['train_loss']:.3f} | "
                     f"{r['valid_loss']:.3f} | {r['valid_loss_ratio']:.3f} |")  # fmt: skip
    memory = "torch's peak allocated CUDA memory" if result["device"] != "cpu" else "the process's peak resident memory"
    lines += ["", f"`{result['command']}` on {result['device_name']} ({result['device']}), "
              f"{result['layers']}L-{result['layers']}L width 128 Admin (vector omegas), {result['updates']} "
              f"updates, medians of {result['rounds']} rounds; memory: {memory}; torch {result['torch']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results/bench_precision", help="folder for results.json/.md")
    parser.add_argument("--data", help="a prepared Bible slice (default: prepared in a cache folder)")
    parser.add_argument("--layers", type=positive_int, default=6)
    parser.add_argument("--updates", type=positive_int, default=60)
    parser.add_argument("--rounds", type=positive_int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 30 updates")
    parser.add_argument("--cpu", action="store_true", help="on the CPU even when a GPU is there")
    args = parser.parse_args(argv)
    if args.quick:
        args.updates, args.rounds = 30, 2
    cpu = args.cpu or not torch.cuda.is_available()
    precisions = ["fp32", "bf16"] + ([] if cpu else ["fp16"])
    if not cpu and not torch.cuda.is_bf16_supported():
        precisions.remove("bf16")
        print(f"note: {torch.cuda.get_device_name()} has no bfloat16: bf16 is left out")
    data = bible_slice(args.data)
    device_type, name = device(cpu)
    print(f"{' vs '.join(precisions)} on {name}: {args.layers}L-{args.layers}L, {args.updates} updates, {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as workdir:
        rows = measure(data, args.layers, precisions, args.rounds, args.updates, cpu, workdir)
    command = " ".join(["python scripts/bench_precision.py", *(argv if argv is not None else sys.argv[1:])])
    result = {"command": command, "device": device_type, "device_name": name, "layers": args.layers,
              "updates": args.updates, "rounds": args.rounds, "torch": torch.__version__, "rows": rows}  # fmt: skip
    write_results(args.out, result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
