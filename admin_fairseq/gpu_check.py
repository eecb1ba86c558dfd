"""The first command on a new GPU machine, before spending GPU-days on a recipe.

    python -m admin_fairseq.gpu_check                  # the real check, on the first GPU
    python -m admin_fairseq.gpu_check --cpu --tiny     # the same steps, tiny, on the CPU

Four steps, each printed as it runs and written to ``--out`` (``gpu_check.json`` and
``gpu_check.md``):

1. environment: Python, torch and its CUDA, fairseq, this plugin, every GPU torch sees
   (name, memory, compute capability), NCCL;
2. the deepest preset: a forward and backward pass of the 100L-100L ``O(1)`` Admin model
   (``transformer_admin_100_100 --admin-output-change-scale O(1)``) in fp16, checked finite,
   with its time and peak memory;
3. a short ``--memory-efficient-fp16`` training (the recipes' precision) of 18L-18L Admin
   (per-dimension omega, as the recipes) and Post-LN through ``fairseq-train`` on fairseq's
   synthetic ``dummy_mt`` task: words/s of each (median of the log intervals after the
   first), their ratio, peak memory;
4. the test suite's ``gpu`` tests (``pytest -m gpu``), when the repository's tests are there.

``--tiny`` shrinks every model (width 32) and the training (a few updates) so that the
whole check runs in a minute on a CPU; the test suite runs it that way, so that the
command cannot rot. Its figures say nothing about a GPU.
"""

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

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
    import fairseq

    import admin_fairseq

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
        (folder / f"dict.{lang}.txt").write_text(words)
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
        flags += ["--cpu", "--fp16-no-flatten-grads"]
    result = subprocess.run([sys.executable, "-c", _WORKER, *flags], capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"the {method} training run failed (exit {result.returncode}):\n{output[-3000:]}")
    inner = [json.loads(m) for m in re.findall(r"train_inner \| (\{.*\})", output)]
    wps = [float(x["wps"]) for x in inner[1:]]  # the first interval includes the start-up
    peak = json.loads(re.search(r"PEAK_BYTES (\S+)", output).group(1))
    return {"words_per_second": round(statistics.median(wps)), "intervals": len(wps),
            "loss": [float(x["loss"]) for x in inner], "loss_scale": float(inner[-1]["loss_scale"]),
            "peak_memory_gb": round(peak / 1e9, 2)}  # fmt: skip


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
    lines += ["", f"Admin / Post-LN words/s: {result['admin_speed_ratio']:.3f}",
              f"gpu tests: {result['gpu_tests']['summary']}", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m admin_fairseq.gpu_check", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (with --tiny: the test suite's check)")
    parser.add_argument("--device", type=int, default=0, help="GPU index (default 0)")
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
    device = torch.device("cpu") if args.cpu else torch.device("cuda", args.device)
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(["python -m admin_fairseq.gpu_check", *(argv if argv is not None else sys.argv[1:])]),
              "device": str(device), "tiny": args.tiny}  # fmt: skip

    say("1/4 environment")
    result["environment"] = env = environment()
    say(f"torch {env['torch']} (CUDA {env['torch_cuda']}), fairseq {env['fairseq']}, "
        f"{len(env['gpus'])} GPU(s): " + (", ".join(g["name"] for g in env["gpus"]) or "none"))
    for gpu in env["gpus"]:
        if float(gpu["capability"]) < 7.0:
            say(f"warning: GPU {gpu['index']} ({gpu['name']}) has compute capability {gpu['capability']}: "
                "no tensor cores, fp16 training will be slow")  # fmt: skip

    say("2/4 fp16 forward and backward of the 100L-100L O(1) Admin preset")
    result["deepest_preset"] = deep = deepest_preset(device, args.tiny, work)
    say(f"finite: {deep['finite']}, {deep['seconds']} s, {deep['parameters']:,} parameters")

    result["training"] = {}
    for k, method in enumerate(METHODS, 1):
        say(f"3/4 memory-efficient-fp16 training of 18L-18L {method} ({k} of {len(METHODS)})")
        row = result["training"][method] = train_speed(method, device, args.tiny, work)
        say(f"{method}: {row['words_per_second']:,} words/s, peak {row['peak_memory_gb']} GB, "
            f"loss {row['loss'][0]:.3f} -> {row['loss'][-1]:.3f}, loss scale {row['loss_scale']:g}")
    train = result["training"]
    result["admin_speed_ratio"] = train["Admin"]["words_per_second"] / train["Post-LN"]["words_per_second"]

    if args.no_tests:
        result["gpu_tests"] = {"ran": False, "summary": "not run (--no-tests)"}
    else:
        say("4/4 the test suite's gpu tests (pytest -m gpu)")
        result["gpu_tests"] = gpu_tests()
    say(f"gpu tests: {result['gpu_tests']['summary']}")

    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = report_markdown(result)
    (out / "gpu_check.md").write_text(markdown)
    print(markdown)
    say(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    ok = deep["finite"] and all(
        all(map(lambda x: x == x and x != float("inf"), row["loss"])) for row in train.values()
    ) and result["gpu_tests"].get("exit_code", 0) in (0, 5)  # 5: pytest collected nothing
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
