"""The first command on a new GPU machine, before spending GPU-days on a recipe.

    python -m admin_fairseq.gpu_check                  # the real check, on the first GPU
    python -m admin_fairseq.gpu_check --cpu --tiny     # the same steps, tiny, on the CPU

Five steps, each printed as it runs and written to ``--out`` (``gpu_check.json`` and
``gpu_check.md``):

1. environment: Python, torch and its CUDA, fairseq, this plugin, every GPU torch sees
   (name, memory, compute capability), NCCL;
2. the deepest preset: a forward and backward pass of the 100L-100L ``O(1)`` Admin model
   (``transformer_admin_100_100 --admin-output-change-scale O(1)``) in fp16, checked finite,
   with its time and peak memory;
3. a short ``--memory-efficient-fp16`` training (admin-torch's precision) of 18L-18L Admin
   (per-dimension omega, as the recipes) and Post-LN through ``fairseq-train`` on fairseq's
   synthetic ``dummy_mt`` task: words/s of each (median of the log intervals after the
   first), their ratio, peak memory;
4. the recipes' code paths, each started by ``python -m admin_fairseq.launch`` as the
   recipes start their workers: Transformer-Clinic's plain ``--fp16`` with RAdam (flat fp32
   master weights) for profiled Admin in two steps (a profiling run writes the omegas, the
   training run reads them) with a checkpoint, then the same command resumed; admin-torch's
   ``--memory-efficient-fp16`` with in-run profiling, broadcast from rank 0, on two
   processes over NCCL when there are two GPUs or more (one process otherwise); and the
   plugin's ``--bf16-autocast`` (the recipes' ``--precision bf16``), skipped with the
   GPU's name on a GPU without bfloat16;
5. the test suite's ``gpu`` tests (``pytest -m gpu``), when the repository's tests are there.

``--tiny`` shrinks every model (width 32) and the training (a few updates) so that the
whole check runs in about a minute on a CPU. ``--cpu`` runs fairseq's GPU code on CPU
tensors, which needs the test suite's shim (``tests/gpu_on_cpu``); the suite runs
``--cpu --tiny`` that way (two processes over gloo in step 4), so that the command cannot
rot. Its figures say nothing about a GPU.
"""

import argparse
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from admin_fairseq import atomic, command, fairseq_log, outputs
from admin_fairseq.argtypes import nonnegative_int

REPO = Path(__file__).resolve().parents[1]
TINY_WIDTH = ["--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
              "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
              "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]  # fmt: skip
METHODS = {"Admin": ["--admin-init", "--admin-as-parameter"], "Post-LN": []}
#: run inside the training subprocess: fairseq-train, then the process's peak memory
_WORKER = """
import json, resource, sys, torch
from fairseq_cli import train
sys.argv = ["fairseq-train", *sys.argv[1:]]
try:
    train.cli_main()
finally:
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() and "--cpu" not in sys.argv
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print("PEAK_BYTES " + json.dumps(peak), flush=True)
"""


def say(text):
    print(f"[gpu_check] {text}", flush=True)


def environment():
    import admin_fairseq
    from admin_fairseq import plugin

    fairseq = plugin.load()

    info = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "fairseq": fairseq.__version__, "admin_fairseq": admin_fairseq.__version__,
        "nccl": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
        "gpus": [],
    }  # fmt: skip
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        info["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 1e9, 1),
                             "capability": f"{p.major}.{p.minor}"})  # fmt: skip
    return info


def _dictionary(folder, size):
    folder.mkdir(parents=True, exist_ok=True)
    words = "".join(f"w{i} 1\n" for i in range(size))
    for lang in ("src", "tgt"):
        atomic.write_text(folder / f"dict.{lang}.txt", words)
    return folder


def deepest_preset(device, tiny, work):
    """fp16 forward and backward of 100L-100L O(1) Admin on one synthetic batch."""
    from admin_fairseq.build import build_from_flags

    flags = ["--task", "translation", "-s", "src", "-t", "tgt", "--arch", "transformer_admin_100_100",
             "--admin-init", "--admin-output-change-scale", "O(1)", "--admin-as-parameter",
             "--share-all-embeddings", *(TINY_WIDTH if tiny else [])]  # fmt: skip
    data = _dictionary(work / "dict", 1000 if tiny else 32000)
    model, task, _ = build_from_flags(data, flags, seed=1)
    model = model.to(device).half().train()
    sentences, length = (4, 12) if tiny else (16, 64)
    vocab = len(task.source_dictionary)
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, vocab, (sentences, length), generator=gen).to(device)
    prev = torch.randint(4, vocab, (sentences, length), generator=gen).to(device)
    lengths = torch.full((sentences,), length, dtype=torch.long, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    logits, _ = model(src, lengths, prev)
    logits.float().logsumexp(-1).mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    omegas = [m.omega for m in model.modules() if hasattr(m, "omega")]
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(logits.dtype), "batch": f"{sentences} x {length} tokens",
        "finite": bool(torch.isfinite(logits.float()).all() and all(torch.isfinite(g.float()).all() for g in grads)),
        "gradients": len(grads), "omega_max": round(max(o.float().max().item() for o in omegas), 2),
        "seconds": round(seconds, 3),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else None,
    }  # fmt: skip


def train_speed(method, device, tiny, work):
    """A short memory-efficient-fp16 fairseq-train run of 18L-18L on dummy_mt."""
    size = ["--dict-size", "1000", "--src-len", "12", "--tgt-len", "12", "--max-tokens", "600",
            "--max-update", "12", "--log-interval", "3"] if tiny else \
           ["--dict-size", "32000", "--src-len", "30", "--tgt-len", "30", "--max-tokens", "4096",
            "--max-update", "100", "--log-interval", "10"]  # fmt: skip
    flags = ["--task", "dummy_mt", "--dataset-size", "100000", *size, "--user-dir", str(REPO / "admin_fairseq"),
             "--arch", "transformer_admin_18_18", *(TINY_WIDTH if tiny else []), *METHODS[method],
             "--share-all-embeddings", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3",
             "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000", "--criterion",
             "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--memory-efficient-fp16",
             "--fp16-scale-window", "256", "--threshold-loss-scale", "0.0625", "--no-save",
             "--disable-validation", "--log-format", "json", "--no-progress-bar", "--num-workers", "0",
             "--seed", "1", "--distributed-world-size", "1", "--save-dir", str(work / "unused")]  # fmt: skip
    if device.type == "cpu":
        flags += ["--cpu"]
    result = subprocess.run([sys.executable, "-c", _WORKER, *flags], capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"the {method} training run failed (exit {result.returncode}):\n{output[-3000:]}")
    inner = [stats for _, stats in fairseq_log.records(output.splitlines(), "train_inner")]
    wps = [float(x["wps"]) for x in inner[1:]]  # the first interval includes the start-up
    peak = json.loads(re.search(r"PEAK_BYTES (\S+)", output).group(1))
    return {"words_per_second": round(statistics.median(wps)), "intervals": len(wps),
            "loss": [float(x["loss"]) for x in inner], "loss_scale": float(inner[-1]["loss_scale"]),
            "peak_memory_gb": round(peak / 1e9, 2)}  # fmt: skip


def _dummy_flags(tiny, save_dir, method_flags, precision_flags, max_update, seed=1):
    size = ["--dict-size", "1000", "--src-len", "12", "--tgt-len", "12", "--max-tokens", "600",
            "--encoder-layers", "2", "--decoder-layers", "2", *TINY_WIDTH] if tiny else \
           ["--dict-size", "32000", "--src-len", "30", "--tgt-len", "30", "--max-tokens", "4096",
            "--encoder-layers", "6", "--decoder-layers", "6"]  # fmt: skip
    return ["--task", "dummy_mt", "--dataset-size", "100000", *size, "--user-dir", str(REPO / "admin_fairseq"),
            "--arch", "transformer_admin_wmt_en_de", *method_flags, "--share-all-embeddings",
            "--lr", "7e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
            "--warmup-init-lr", "1e-07", "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", *precision_flags, "--fp16-scale-window", "256",
            "--max-update", str(max_update), "--save-interval-updates", "3", "--no-epoch-checkpoints",
            "--disable-validation", "--log-format", "json", "--log-interval", "1", "--no-progress-bar",
            "--num-workers", "0", "--seed", str(seed), "--save-dir", str(save_dir)]  # fmt: skip


def _launch(flags, device, workers):
    """Run fairseq-train through admin_fairseq.launch (as the recipes do); its output."""
    flags = [*flags, "--distributed-world-size", str(workers)] + (["--cpu"] if device.type == "cpu" else [])
    launch = ["-m", "admin_fairseq.launch", "--launcher", "none" if workers == 1 else "torchrun", "--", *flags]
    if workers == 1:
        command = [sys.executable, *launch]
    else:
        command = [sys.executable, "-m", "admin_fairseq.local_torchrun", "--nproc-per-node",
                   str(workers), *launch]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:8])} ... failed (exit {result.returncode}):\n{output[-3000:]}")
    return output


def _trained(output, save_dir):
    from admin_fairseq.checkpoints import read

    losses = [float(stats["loss"]) for _, stats in fairseq_log.records(output.splitlines(), "train_inner")]
    state = read(Path(save_dir) / "checkpoint_last.pt")
    return {"updates": state["optimizer_history"][-1]["num_updates"], "losses": losses,
            "finite": bool(losses) and all(math.isfinite(x) for x in losses)}  # fmt: skip


def recipe_paths(device, tiny, work):
    """Step 4: the recipes' optimizer x precision paths and profiling (see the module's note)."""
    rows = {}
    clinic = work / "clinic"
    profile = clinic / "admin_profile.json"
    fp16 = ["--optimizer", "radam", "--adam-betas", "(0.9, 0.98)", "--fp16", "--threshold-loss-scale", "0.03125"]
    say("4/5 RAdam, plain --fp16: profiling run (one worker)")
    _launch(_dummy_flags(tiny, clinic, ["--admin-init", "--admin-profile-to", str(profile)], fp16, 6), device, 1)
    encoder = json.loads(profile.read_text())["encoder"]
    training = _dummy_flags(tiny, clinic, ["--admin-init", "--admin-profile-from", str(profile)], fp16, 6)
    say("4/5 RAdam, plain --fp16: training with the profile, 6 updates, checkpoints every 3")
    row = _trained(_launch(training, device, 1), clinic)
    say("4/5 RAdam, plain --fp16: the same command with --max-update 8 resumes")
    resumed = _launch(_dummy_flags(tiny, clinic, ["--admin-init", "--admin-profile-from", str(profile)],
                                   fp16, 8), device, 1)  # fmt: skip
    again = _trained(resumed, clinic)
    rows["radam-fp16-profiled"] = dict(
        row, profile_first_last=[encoder[0], encoder[-1]], resumed_from=row["updates"],
        resumed_to=again["updates"],
        ok=row["finite"] and row["updates"] == 6 and again["updates"] == 8
        and bool(re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ 6 updates\)", resumed)),
    )  # fmt: skip
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    workers = 2 if device.type == "cpu" or gpus >= 2 else 1
    backend = "gloo (test shim)" if device.type == "cpu" else ("nccl" if workers > 1 else "one process")
    say(f"4/5 Adam, --memory-efficient-fp16, profiled inside the run: {workers} worker(s), {backend}")
    adam = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--memory-efficient-fp16",
            "--threshold-loss-scale", "0.0625"]  # fmt: skip
    # with the stability monitor every 2 updates (docs/monitor.md): rank 0 logs it
    output = _launch(_dummy_flags(tiny, work / "admin-torch", ["--admin-init", "--admin-profile",
                                                               "--admin-monitor-interval", "2"], adam, 4),
                     device, workers)  # fmt: skip
    row = _trained(output, work / "admin-torch")
    monitored = [int(stats["num_updates"]) for _, stats in fairseq_log.records(output.splitlines(), "train_inner")
                 if "share/decoder.0.cross_attn" in stats and "output_change/decoder" in stats]  # fmt: skip
    rows["adam-memory-efficient-fp16-profiled"] = dict(
        row, workers=workers, backend=backend, monitored_updates=monitored,
        ok=row["finite"] and row["updates"] == 4 and "Admin profiled" in output and monitored == [2, 4])  # fmt: skip
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        say(f"4/5 --precision bf16: skipped, {name} has no bfloat16 (compute capability 8.0 or newer needs it)")
        rows["adam-bf16-autocast"] = {"ok": True, "skipped": f"{name} has no bfloat16", "updates": 0, "losses": []}
        return rows
    say("4/5 Adam, --bf16-autocast (the recipes' --precision bf16: fp32 weights, bf16 compute), 4 updates")
    bf16 = ["--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--bf16-autocast"]
    output = _launch(_dummy_flags(tiny, work / "bf16", ["--admin-init", "--admin-as-parameter"], bf16, 4), device, 1)
    row = _trained(output, work / "bf16")
    rows["adam-bf16-autocast"] = dict(row, ok=row["finite"] and row["updates"] == 4)
    return rows


def gpu_tests():
    tests = REPO / "tests"
    if not tests.is_dir():
        return {"ran": False, "summary": "no tests folder next to the package (installed without the repository)"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(tests)],
                            capture_output=True, text=True, cwd=REPO)  # fmt: skip
    last = (result.stdout.strip().splitlines() or [""])[-1]
    return {"ran": True, "exit_code": result.returncode, "summary": last.strip("= ")}


def report_markdown(result):
    env, deep, train = result["environment"], result["deepest_preset"], result["training"]
    gpus = "; ".join(f"{g['index']}: {g['name']} ({g['memory_gb']} GB, sm {g['capability']})"
                     for g in env["gpus"]) or "none"  # fmt: skip
    lines = [
        f"# gpu_check ({'tiny, ' if result['tiny'] else ''}device {result['device']})", "",
        f"Command: `{result['command']}`", "",
        f"- torch {env['torch']} (CUDA {env['torch_cuda']}), fairseq {env['fairseq']}, "
        f"admin-fairseq {env['admin_fairseq']}, Python {env['python']}; NCCL: {env['nccl']}",
        f"- GPUs: {gpus}",
        f"- 100L-100L O(1) Admin, fp16 forward+backward ({deep['batch']}, {deep['parameters']:,} "
        f"parameters): finite {deep['finite']}, {deep['seconds']} s, largest omega {deep['omega_max']}"
        + (f", peak {deep['peak_memory_gb']} GB" if deep["peak_memory_gb"] is not None else ""),
        "", "| 18L-18L, --memory-efficient-fp16 | words/s | peak memory (GB) | last loss | loss scale |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for method, row in train.items():
        lines.append(f"| {method} | {row['words_per_second']:,} | {row['peak_memory_gb']} | "
                     f"{row['loss'][-1]:.3f} | {row['loss_scale']:g} |")  # fmt: skip
    lines += ["", f"Admin / Post-LN words/s: {result['admin_speed_ratio']:.3f}", "",
              "| recipe path | updates | last loss | ok |", "|---|---|---|---|"]
    for name, row in result["recipe_paths"].items():
        updates = f"{row['resumed_from']} then resumed to {row['resumed_to']}" if "resumed_to" in row else row["updates"]
        workers = f" ({row['workers']} workers, {row['backend']})" if "workers" in row else ""
        if row.get("skipped"):
            lines.append(f"| {name} | skipped: {row['skipped']} | - | {row['ok']} |")
            continue
        lines.append(f"| {name}{workers} | {updates} | {row['losses'][-1]:.3f} | {row['ok']} |")
    lines += ["", f"gpu tests: {result['gpu_tests']['summary']}", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m admin_fairseq.gpu_check", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny: the test suite's check)")
    parser.add_argument("--device", type=nonnegative_int, default=0, help="GPU index (default 0)")
    parser.add_argument("--tiny", action="store_true", help="width-32 models and a few updates")
    parser.add_argument("--no-tests", action="store_true", help="skip step 4 (pytest -m gpu)")
    parser.add_argument("--out", default="gpu_check", help="folder for gpu_check.json/.md (default gpu_check)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: error: torch sees no CUDA GPU (torch.cuda.is_available() is False; torch "
              f"{torch.__version__}, built with CUDA {torch.version.cuda}). Install a CUDA build of "
              "torch, check nvidia-smi and CUDA_VISIBLE_DEVICES, or run --cpu --tiny to try the "
              "check itself", file=sys.stderr)  # fmt: skip
        return 2
    if not args.cpu and not 0 <= args.device < torch.cuda.device_count():
        print(f"gpu_check: error: --device {args.device}, but torch sees {torch.cuda.device_count()} "
              "GPU(s)", file=sys.stderr)  # fmt: skip
        return 2
    if args.cpu and not torch.cuda.is_available():
        from fairseq.trainer import Trainer

        if not getattr(Trainer, "gpu_code_on_cpu_shim", False):
            print("gpu_check: error: --cpu runs fairseq's GPU code paths (fp16 optimizers, NCCL) on "
                  "CPU tensors, which fairseq 0.12 cannot do without the test suite's shim; run it "
                  "as the tests do: python -m pytest tests/test_gpu_check.py (or with "
                  "PYTHONPATH=tests/gpu_on_cpu)", file=sys.stderr)  # fmt: skip
            return 2
    device = torch.device("cpu") if args.cpu else torch.device("cuda", args.device)
    out = Path(args.out)
    outputs.Folder(out, "gpu_check").claim(["work", "gpu_check.json", "gpu_check.md"], hint="choose another --out")
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(["python -m admin_fairseq.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
              "device": str(device), "tiny": args.tiny}  # fmt: skip

    say("1/5 environment")
    result["environment"] = env = environment()
    say(f"torch {env['torch']} (CUDA {env['torch_cuda']}), fairseq {env['fairseq']}, "
        f"{len(env['gpus'])} GPU(s): " + (", ".join(g["name"] for g in env["gpus"]) or "none"))
    for gpu in env["gpus"]:
        if float(gpu["capability"]) < 7.0:
            say(f"warning: GPU {gpu['index']} ({gpu['name']}) has compute capability {gpu['capability']}: "
                "no tensor cores, fp16 training will be slow")  # fmt: skip

    say("2/5 fp16 forward and backward of the 100L-100L O(1) Admin preset")
    result["deepest_preset"] = deep = deepest_preset(device, args.tiny, work)
    say(f"finite: {deep['finite']}, {deep['seconds']} s, {deep['parameters']:,} parameters")

    result["training"] = {}
    for k, method in enumerate(METHODS, 1):
        say(f"3/5 memory-efficient-fp16 training of 18L-18L {method} ({k} of {len(METHODS)})")
        row = result["training"][method] = train_speed(method, device, args.tiny, work)
        say(f"{method}: {row['words_per_second']:,} words/s, peak {row['peak_memory_gb']} GB, "
            f"loss {row['loss'][0]:.3f} -> {row['loss'][-1]:.3f}, loss scale {row['loss_scale']:g}")
    train = result["training"]
    result["admin_speed_ratio"] = train["Admin"]["words_per_second"] / train["Post-LN"]["words_per_second"]

    result["recipe_paths"] = paths = recipe_paths(device, args.tiny, work)
    for name, row in paths.items():
        if row.get("skipped"):
            say(f"{name}: skipped ({row['skipped']})")
            continue
        say(f"{name}: {'ok' if row['ok'] else 'FAILED'} ({row['updates']} updates, last loss {row['losses'][-1]:.3f})")

    if args.no_tests:
        result["gpu_tests"] = {"ran": False, "summary": "not run (--no-tests)"}
    else:
        say("5/5 the test suite's gpu tests (pytest -m gpu)")
        result["gpu_tests"] = gpu_tests()
    say(f"gpu tests: {result['gpu_tests']['summary']}")

    atomic.write_json(out / "gpu_check.json", result)
    markdown = report_markdown(result)
    atomic.write_text(out / "gpu_check.md", markdown)
    print(markdown)
    say(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    ok = deep["finite"] and all(
        all(map(lambda x: x == x and x != float("inf"), row["loss"])) for row in train.values()
    ) and all(row["ok"] for row in paths.values()) and result["gpu_tests"].get("exit_code", 0) in (0, 5)
    # (pytest's exit 5: it collected nothing)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(command.run("gpu_check", main))
