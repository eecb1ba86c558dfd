"""Train one recipe run: a method, a depth and a batch setting, with the published settings.

    python -m admin_fairseq.recipes.train --data data/wmt17-en-de --method admin \
        --depth 18-18 --batch 8x4096 [--dry-run] [-- extra fairseq-train flags]

The batch setting ``AxB`` means A x B tokens per update (``8x4096`` = 32,768, ``128x4096`` =
524,288). The GPUs are detected (or given with ``--gpus``); ``--update-freq`` is computed so
that nodes x GPUs x max-tokens x update-freq equals the setting exactly, and the arithmetic is
printed. ``8x4096`` and ``128x4096`` use the published hyper-parameters (REFERENCE.md section
1); other settings (e.g. ``1x2048`` for a CPU) must name a ``--recipe``. Several nodes run
through ``torchrun``. fairseq resumes from ``checkpoint_last.pt`` when the same command is run
again. Flags after ``--`` go to ``fairseq-train`` last, so they override ours.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from admin_fairseq.recipes import RecipeError
from admin_fairseq.recipes.prepare import check_prepared

#: method -> fairseq-train flags (on the transformer_admin model; without --admin-init it is
#: fairseq's Post-LN transformer, bit for bit).
METHODS = {
    "post-ln": [],
    "pre-ln": ["--encoder-normalize-before", "--decoder-normalize-before"],
    # The published Admin recipes train one omega per dimension (initialised to the O(logn) value).
    "admin": ["--admin-init", "--admin-as-parameter"],
    # admin-torch's default: one fixed scalar omega per stack.
    "admin-scalar": ["--admin-init"],
    # Original Admin: omegas profiled on the first training batch (Transformer-Clinic).
    "admin-profiled": ["--admin-init", "--admin-profile"],
    "deepnet": ["--deepnet"],
}

#: model width -> (architecture preset, flags). Depth is always set with --encoder/decoder-layers.
SIZES = {
    "base": ("transformer_admin_wmt_en_de", []),  # 512/2048/8 heads: the Admin papers' models
    "big": ("transformer_admin_vaswani_wmt_en_de_big", []),  # 1024/4096/16 heads
    "cpu": ("transformer_admin", ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
                                  "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
                                  "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]),
}  # fmt: skip

#: Published recipes (REFERENCE.md section 1). ``max_tokens`` is the per-GPU batch the
#: published runs used for that setting.
RECIPES = {
    "regular": {  # "8x4096": 8 GPUs x 4096 tokens x update-freq 1
        "lr": "1e-3", "warmup": "8000", "weight_decay": "0.0", "dropout": "0.1",
        "max_tokens": 4096, "stop": ["--max-epoch", "50"],
    },
    "huge": {  # "128x4096": 8 GPUs x 2048 tokens x update-freq 32, 100k updates
        "lr": "1.5e-3", "warmup": "4000", "weight_decay": "1e-4", "dropout": "0.4",
        "max_tokens": 2048, "stop": ["--max-update", "100000"],
    },
}  # fmt: skip
BIG_HUGE_LR = "7e-4"  # the big model at 128x4096 (16 GPUs x 2048 x 16)
PUBLISHED_BATCHES = {"8x4096": "regular", "128x4096": "huge"}

COMMON = [
    "--share-all-embeddings",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--lr-scheduler", "inverse_sqrt", "--warmup-init-lr", "1e-07",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--attention-dropout", "0.1", "--activation-dropout", "0.1",
]  # fmt: skip
FP16 = ["--memory-efficient-fp16", "--fp16-scale-window", "256", "--threshold-loss-scale", "0.0625"]


def parse_depth(depth):
    try:
        enc, dec = (int(part) for part in depth.split("-"))
    except ValueError:
        raise RecipeError(
            f"--depth must be ENCODER-DECODER layers, e.g. 6-6, 18-18, 60-12, 100-100; got {depth!r}"
        ) from None
    if enc < 1 or dec < 1:
        raise RecipeError(f"--depth needs at least one layer per stack; got {depth!r}")
    return enc, dec


def parse_batch(batch):
    try:
        a, b = (int(part) for part in batch.lower().split("x"))
    except ValueError:
        raise RecipeError(
            f"--batch must be AxB (A x B tokens per update), e.g. 8x4096 or 128x4096; got {batch!r}"
        ) from None
    if a < 1 or b < 1:
        raise RecipeError(f"--batch must be positive; got {batch!r}")
    return a, b


def update_freq(batch, workers, max_tokens):
    """``--update-freq`` so that workers x max_tokens x update_freq == the batch's tokens.

    Raises RecipeError (naming worker counts and max-tokens that do work) when no integer does.
    """
    a, b = parse_batch(batch)
    total = a * b
    per_step = workers * max_tokens
    if total % per_step == 0:
        return total // per_step
    fits_workers = [w for w in (1, 2, 4, 8, 16, 32, 64, 128, 256) if total % (w * max_tokens) == 0]
    fits_tokens = [t for t in (8192, 6144, 4096, 3072, 2048, 1024, 512)
                   if total % (workers * t) == 0]  # fmt: skip
    hint = []
    if fits_tokens:
        hint.append(f"with {workers} worker(s) use --max-tokens {' or '.join(map(str, fits_tokens))}")
    if fits_workers:
        hint.append(f"with --max-tokens {max_tokens} use {', '.join(map(str, fits_workers))} GPUs")
    raise RecipeError(
        f"--batch {batch} = {total:,} tokens per update cannot be reached exactly by {workers} "
        f"worker(s) x {max_tokens} max-tokens (= {per_step:,} per step: {total / per_step:.3g} "
        f"steps per update); " + ("; ".join(hint) if hint else "choose another --batch")
    )


def detect_gpus():
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _which(name):
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def build(args):
    """Return ``(commands, info)``: the command line(s) to run and what was decided."""
    data_bin = Path(args.data) / "bin"
    enc, dec = parse_depth(args.depth)
    parse_batch(args.batch)
    if args.method not in METHODS:
        raise RecipeError(f"unknown --method {args.method!r}; choose from {', '.join(METHODS)}")
    if args.size not in SIZES:
        raise RecipeError(f"unknown --size {args.size!r}; choose from {', '.join(SIZES)}")
    recipe_name = args.recipe or PUBLISHED_BATCHES.get(args.batch)
    if recipe_name is None:
        raise RecipeError(
            f"--batch {args.batch} is not a published setting ({', '.join(PUBLISHED_BATCHES)}); "
            f"name the hyper-parameters with --recipe {' or '.join(RECIPES)}"
        )
    if recipe_name not in RECIPES:
        raise RecipeError(f"unknown --recipe {recipe_name!r}; choose from {', '.join(RECIPES)}")
    recipe = RECIPES[recipe_name]
    # Published settings use the published per-GPU batch; for another AxB, B is the per-worker batch.
    published = args.batch in PUBLISHED_BATCHES and recipe_name == PUBLISHED_BATCHES[args.batch]
    max_tokens = args.max_tokens or (recipe["max_tokens"] if published else parse_batch(args.batch)[1])

    if args.cpu:
        if args.nodes > 1:
            raise RecipeError("--cpu runs on one machine; drop --nodes")
        gpus = 0
        workers = 1
    else:
        gpus = args.gpus if args.gpus is not None else detect_gpus()
        if gpus < 1:
            raise RecipeError(
                "no GPU found (torch.cuda.device_count() is 0). Pass --gpus N to print the "
                "commands for N GPUs with --dry-run, or --cpu for a small CPU run"
            )
        workers = gpus * args.nodes
    freq = update_freq(args.batch, workers, max_tokens)
    a, b = parse_batch(args.batch)
    who = "1 CPU process" if args.cpu else f"{args.nodes} node(s) x {gpus} GPU(s)"
    arithmetic = (
        f"{args.batch} = {a * b:,} tokens per update = {who} x --max-tokens {max_tokens} "
        f"x --update-freq {freq}"
    )

    arch, size_flags = SIZES[args.size]
    lr = recipe["lr"]
    if recipe_name == "huge" and args.size == "big":
        lr = BIG_HUGE_LR
    save_dir = Path(args.save_dir or Path("runs") / Path(args.data).name /
                    f"{args.method}-{enc}-{dec}-{args.batch}")  # fmt: skip
    flags = [
        str(data_bin), "--user-dir", str(Path(__file__).resolve().parents[1]),
        "--arch", arch, *size_flags, "--encoder-layers", str(enc), "--decoder-layers", str(dec),
        *METHODS[args.method], *COMMON,
        "--lr", lr, "--warmup-updates", recipe["warmup"], "--weight-decay", recipe["weight_decay"],
        "--dropout", recipe["dropout"], "--max-tokens", str(max_tokens), "--update-freq", str(freq),
        *recipe["stop"], "--save-dir", str(save_dir), "--keep-last-epochs", "10",
        "--log-format", "json", "--log-interval", str(args.log_interval), "--seed", str(args.seed),
    ]  # fmt: skip
    flags += ["--cpu"] if args.cpu else FP16
    if workers > 1:
        flags += ["--distributed-world-size", str(workers)]
    flags += list(args.extra)  # last, so that they override ours
    train = _which("fairseq-train")
    if args.cpu or args.nodes == 1:
        commands = [[train, *flags]]
    else:
        # torchrun sets MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK; fairseq then initialises with
        # env:// and takes its rank from RANK and its GPU from RANK % GPUs per node.
        commands = [[
            _which("torchrun"), "--nnodes", str(args.nodes), "--node-rank", str(args.node_rank),
            "--nproc-per-node", str(gpus), "--master-addr", args.master_addr,
            "--master-port", str(args.master_port), train, *flags,
        ]]  # fmt: skip
    info = {
        "method": args.method, "encoder_layers": enc, "decoder_layers": dec,
        "batch": args.batch, "recipe": recipe_name, "size": args.size, "arch": arch,
        "workers": workers, "nodes": args.nodes, "gpus_per_node": gpus, "cpu": args.cpu,
        "max_tokens": max_tokens, "update_freq": freq, "arithmetic": arithmetic,
        "data": str(args.data), "save_dir": str(save_dir), "seed": args.seed,
        "command": shlex.join(commands[0]),
    }  # fmt: skip
    return commands, info


def finished_before(info):
    """True when ``{save_dir}/run.json`` records that this very command ran to the end.

    Running a finished fairseq command again is not a no-op: fairseq resumes from
    ``checkpoint_last.pt``, performs one more update and only then notices --max-update, so
    the recipes skip such runs instead.
    """
    record = Path(info["save_dir"]) / "run.json"
    if not record.exists():
        return False
    previous = json.loads(record.read_text())
    return previous.get("status") == "finished" and previous.get("command") == info["command"]


def run(commands, info, log=print, on_line=None):
    """Run the training command, teeing its output to ``{save_dir}/train.log``; return the
    exit code. ``run.json`` records the decisions, the command and the outcome."""
    save_dir = Path(info["save_dir"])
    save_dir.mkdir(parents=True, exist_ok=True)
    record = save_dir / "run.json"
    info = dict(info, started=time.strftime("%Y-%m-%d %H:%M:%S"), status="running")
    record.write_text(json.dumps(info, indent=2) + "\n")
    env = dict(os.environ)
    if info["cpu"]:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    start = time.time()
    with open(save_dir / "train.log", "a", encoding="utf-8") as logfile:
        logfile.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {info['command']}\n")
        proc = subprocess.Popen(commands[0], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, bufsize=1)  # fmt: skip
        for line in proc.stdout:
            logfile.write(line)
            logfile.flush()
            if on_line is not None:
                on_line(line)
            else:
                log(line.rstrip("\n"))
        code = proc.wait()
    info.update(status="finished" if code == 0 else f"failed (exit {code})", exit_code=code,
                seconds=round(time.time() - start, 1))  # fmt: skip
    record.write_text(json.dumps(info, indent=2) + "\n")
    return code


def make_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --data DIR --method M --depth E-D --batch AxB [options] [-- fairseq flags]",
    )  # fmt: skip
    env = os.environ.get
    parser.add_argument("--data", required=True, help="folder made by the prepare step")
    parser.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    parser.add_argument("--depth", required=True, help="ENCODER-DECODER layers: 6-6, 18-18, 60-12, 100-100, ...")
    parser.add_argument("--batch", required=True, help="AxB tokens per update: 8x4096 or 128x4096 "
                        "(published), or any other with --recipe")  # fmt: skip
    parser.add_argument("--recipe", help=f"hyper-parameter set: {', '.join(RECIPES)} (default: the "
                        "published one of --batch)")  # fmt: skip
    parser.add_argument("--size", default="base", help=f"model width: {', '.join(SIZES)} (default base)")
    parser.add_argument("--max-tokens", type=int, help="per-GPU tokens (default: 4096 at 8x4096, "
                        "2048 at 128x4096, B for another AxB)")  # fmt: skip
    parser.add_argument("--gpus", type=int, help="GPUs per node (default: detected)")
    parser.add_argument("--nodes", type=int, default=int(env("NNODES", 1)),
                        help="nodes (default $NNODES or 1); more than 1 runs torchrun")
    parser.add_argument("--node-rank", type=int, default=int(env("NODE_RANK", 0)),
                        help="this node's rank (default $NODE_RANK or 0)")
    parser.add_argument("--master-addr", default=env("MASTER_ADDR", "127.0.0.1"),
                        help="rank 0's address (default $MASTER_ADDR or 127.0.0.1)")
    parser.add_argument("--master-port", type=int, default=int(env("MASTER_PORT", 29500)),
                        help="rank 0's port (default $MASTER_PORT or 29500)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU (small models only)")
    parser.add_argument("--save-dir", help="run folder (default runs/{data}/{method}-{E}-{D}-{batch})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=100)
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    parser.add_argument("--force", action="store_true", help="run even if run.json says this "
                        "command already finished (fairseq then adds one update)")  # fmt: skip
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = make_parser()
    args = parser.parse_args(argv)
    args.extra = extra
    try:
        if args.nodes < 1 or not 0 <= args.node_rank < args.nodes:
            raise RecipeError(f"--node-rank must be in 0..{args.nodes - 1} for --nodes {args.nodes}")
        if args.cpu and args.gpus:
            raise RecipeError("--cpu and --gpus exclude each other")
        commands, info = build(args)
        print(f"[train] {info['arithmetic']}")
        if args.dry_run:
            for command in commands:
                print(shlex.join(command))
            return 0
        check_prepared(args.data)
    except RecipeError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    if finished_before(info) and not args.force:
        print(f"[train] {info['save_dir']} already finished this exact command (see its run.json); "
              "nothing to do. --force trains it again from its last checkpoint")  # fmt: skip
        return 0
    print(f"[train] {info['command']}")
    print(f"[train] log: {Path(info['save_dir']) / 'train.log'}")
    return run(commands, info)


if __name__ == "__main__":
    sys.exit(main())
