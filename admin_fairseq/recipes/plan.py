"""Planning a recipe run: the depth and batch arithmetic, the workers and how they are
started (one process, torchrun on one or several nodes, Slurm), the exact fairseq command
(:func:`build`, with the changes ``--cpu`` makes listed in ``CPU_CHANGES``), and the disk a
run's checkpoints need. Nothing here starts a process; :mod:`admin_fairseq.recipes.train`
runs what :func:`build` returns."""

import dataclasses
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from admin_fairseq.fairseq_flags import flag_value
from admin_fairseq.recipes import RecipeError
from admin_fairseq.recipes.record import RunRecord
from admin_fairseq.recipes.published import BIG_HUGE_LR, COMMON, METHODS, PUBLISHED_BATCHES, RECIPES, SAVE_EVERY, SIZES

#: --precision -> flags; "recipe" is the recipe's own fp16 flags; "bf16" is the plugin's
#: autocast (fairseq 0.12's own --bf16 implies --tpu: it needs torch_xla and an XLA device).
PRECISIONS = {"recipe": None, "fp32": [], "amp": ["--amp"], "bf16": ["--bf16-autocast"]}
#: Everything a --cpu command changes in the command a GPU gets, and why; nothing else
#: differs (tests/test_gpu_faithful.py holds every recipe command to this list, and
#: docs/development.md explains each entry).
CPU_CHANGES = {
    "--cpu": "the device: fairseq trains on CPU tensors",
    "fp32": "no --precision given: the recipe's --fp16/--memory-efficient-fp16 flags are left "
            "out, because fairseq 0.12's half-precision trainer needs CUDA (the fp32 master "
            "weights are filed by CUDA device; a gradient overflow makes a CUDA tensor); "
            "--cpu --precision recipe is refused for the same reason",
    "gloo": "more than one worker: --distributed-backend gloo --ddp-backend legacy_ddp, "
            "because NCCL needs CUDA and fairseq's pytorch_ddp wrapper passes CUDA device ids",
}  # fmt: skip
CPU_DISTRIBUTED = ["--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp"]
#: bytes per parameter of a checkpoint: fairseq saves the weights in fp32 whatever the
#: training precision (it moves half tensors to fp32 on saving), plus Adam/RAdam's two fp32
#: moments
CHECKPOINT_BYTES_PER_PARAMETER = 4 + 8


@dataclass(frozen=True)
class RunSettings:
    """What a run is asked to be, typed: the train step's options (``python -m
    admin_fairseq.recipes.train``, parsed by :func:`admin_fairseq.recipes.train.settings`) or
    the main job's, built directly. :func:`build` turns it into the exact fairseq command and
    a :class:`~admin_fairseq.recipes.record.RunRecord`; ``None`` means the recipe's default."""

    data: str
    method: str
    depth: str  # ENCODER-DECODER layers
    batch: str  # AxB tokens per update
    recipe: Optional[str] = None
    size: Optional[str] = None
    max_tokens: Optional[int] = None
    avg_epochs: Optional[str] = None
    updates: Optional[int] = None
    precision: Optional[str] = None
    gpus: Optional[int] = None  # per node; None: detected
    cpu: bool = False
    cpu_workers: int = 1
    nodes: int = 1
    node_rank: int = 0
    master_addr: Optional[str] = None
    master_port: Optional[int] = None  # torchrun: 29500; Slurm: derived from the job's id
    slurm: bool = False
    save_every: Optional[int] = None  # updates between interval checkpoints; 0: epoch ends only
    hang_timeout: Optional[float] = None  # launch's --hang-timeout (its default when None)
    save_dir: Optional[str] = None
    seed: Optional[int] = None
    log_interval: int = 100
    monitor: Optional[int] = None  # the stability monitor's interval (--admin-monitor-interval)
    dry_run: bool = False
    extra: tuple = ()  # fairseq-train flags that replace the recipe's, each once

    def __post_init__(self):
        object.__setattr__(self, "data", str(self.data))
        object.__setattr__(self, "extra", tuple(str(flag) for flag in self.extra))
        if self.save_dir is not None:
            object.__setattr__(self, "save_dir", str(self.save_dir))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


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


def parse_window(text):
    """``"36-45"`` -> ``(36, 45)``: the epochs whose checkpoints are averaged."""
    try:
        first, last = (int(part) for part in str(text).split("-"))
    except ValueError:
        raise RecipeError(f"--avg-epochs must be FIRST-LAST epochs, e.g. 36-45; got {text!r}") from None
    if not 1 <= first <= last:
        raise RecipeError(f"--avg-epochs needs 1 <= FIRST <= LAST; got {text!r}")
    return first, last


def detect_gpus():
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _which(name):
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def slurm_layout(env):
    """``(nodes, tasks per node)`` of the Slurm allocation this runs in."""
    try:
        nodes = int(env.get("SLURM_JOB_NUM_NODES") or env["SLURM_NNODES"])
        per_node = env.get("SLURM_NTASKS_PER_NODE")
        per_node = int(per_node.split("(")[0]) if per_node else int(env["SLURM_NTASKS"]) // nodes
    except (KeyError, ValueError):
        raise RecipeError(
            "--slurm: SLURM_JOB_NUM_NODES and SLURM_NTASKS_PER_NODE (or SLURM_NTASKS) are not "
            "set; run the train step inside an allocation (recipes/slurm/train.sbatch), or give "
            "--nodes and --gpus with --dry-run to print the commands"
        ) from None
    return nodes, per_node


def _flag_groups(flags):
    """``["--a", "1", "--b", "--c", "x", "y"]`` -> ``[["--a", "1"], ["--b"], ["--c", "x", "y"]]``."""
    groups = []
    for token in flags:
        if token.startswith("--") or not groups:
            groups.append([token])
        else:
            groups[-1].append(token)
    return groups


def merge_flags(flags, overrides):
    """``flags`` with each flag of ``overrides`` replacing the same flag in place (or added at
    the end when absent), so that every flag appears once: the command that runs is the
    command that is recorded, without a later value silently winning over an earlier one."""
    groups = _flag_groups(flags)
    def name(group):  # --lr=2e-3 and --lr 2e-3 are the same flag
        return group[0].split("=", 1)[0]

    where = {name(group): i for i, group in enumerate(groups) if group[0].startswith("--")}
    for group in _flag_groups(overrides):
        if not group[0].startswith("--"):
            raise RecipeError(f"extra fairseq-train flags must start with --; got {group[0]!r}")
        if name(group) in where:
            groups[where[name(group)]] = group
        else:
            where[name(group)] = len(groups)
            groups.append(group)
    return [token for group in groups for token in group]


def _launch(kind, extra=()):
    return [sys.executable, "-m", "admin_fairseq.launch", "--launcher", kind, *extra, "--"]


def build(settings, env=None):
    """Return ``(commands, record)`` for ``settings`` (a :class:`RunSettings`): the command
    line(s) to run and what was decided (a :class:`~admin_fairseq.recipes.record.RunRecord`)."""
    if not isinstance(settings, RunSettings):
        raise TypeError(f"plan.build takes a RunSettings, not {type(settings).__name__}")
    env = os.environ if env is None else env
    if settings.nodes < 1 or not 0 <= settings.node_rank < settings.nodes:
        raise RecipeError(f"--node-rank must be in 0..{settings.nodes - 1} for --nodes {settings.nodes}")
    if settings.cpu and settings.gpus:
        raise RecipeError("--cpu and --gpus exclude each other")
    if settings.slurm and (settings.nodes > 1 or settings.node_rank) and not settings.dry_run:
        raise RecipeError("--slurm takes the nodes from the allocation; drop --nodes/--node-rank")
    data_bin = Path(settings.data) / "bin"
    enc, dec = parse_depth(settings.depth)
    parse_batch(settings.batch)
    if settings.method not in METHODS:
        raise RecipeError(f"unknown --method {settings.method!r}; choose from {', '.join(METHODS)}")
    published = PUBLISHED_BATCHES.get(settings.batch)
    recipe_name = settings.recipe or (published[0] if published else None)
    if recipe_name is None:
        raise RecipeError(
            f"--batch {settings.batch} is not a published setting ({', '.join(PUBLISHED_BATCHES)}); "
            f"name the hyper-parameters with --recipe {' or '.join(RECIPES)}"
        )
    if recipe_name not in RECIPES:
        raise RecipeError(f"unknown --recipe {recipe_name!r}; choose from {', '.join(RECIPES)}")
    recipe = RECIPES[recipe_name]
    size = settings.size or recipe.get("size", "base")
    if size not in SIZES:
        raise RecipeError(f"unknown --size {size!r}; choose from {', '.join(SIZES)}")
    tpu_bf16 = [f for f in settings.extra if f.split("=")[0] in ("--bf16", "--memory-efficient-bf16")]
    if tpu_bf16:
        raise RecipeError(
            f"{tpu_bf16[0]} is fairseq 0.12's TPU precision (it implies --tpu and runs through "
            "torch_xla, on a GPU machine too); use --precision bf16: fp32 weights, bf16 compute "
            "through autocast, on GPUs with bf16 and on CPUs"
        )
    if settings.precision not in (None, *PRECISIONS):
        raise RecipeError(f"unknown --precision {settings.precision!r}; choose from {', '.join(PRECISIONS)}")
    # Published settings use the published per-GPU batch; for another AxB, B is the per-worker batch.
    is_published = published is not None and recipe_name == published[0]
    max_tokens = settings.max_tokens or (published[1] if is_published else parse_batch(settings.batch)[1])

    # --- workers: where they run and how many
    nodes, node_rank = settings.nodes, settings.node_rank
    cpu_workers, gpus = settings.cpu_workers, settings.gpus
    in_allocation = any(k in env for k in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"))
    if settings.slurm and (in_allocation or not settings.dry_run):
        nodes, per_node = slurm_layout(env)
        if settings.cpu:
            cpu_workers = per_node
        elif gpus is not None and gpus != per_node:
            raise RecipeError(f"--gpus {gpus} but the Slurm job has {per_node} task(s) per "
                              "node (SLURM_NTASKS_PER_NODE); one task drives one GPU")  # fmt: skip
        else:
            gpus = per_node
    if settings.cpu:
        per_node = cpu_workers
    else:
        per_node = gpus if gpus is not None else detect_gpus()
        if per_node < 1:
            raise RecipeError(
                "no GPU found (torch.cuda.device_count() is 0). Pass --gpus N to print the "
                "commands for N GPUs with --dry-run, or --cpu for a small CPU run"
            )
    if per_node < 1:
        raise RecipeError(f"--cpu-workers must be >= 1; got {per_node}")
    if nodes > 1 and not settings.slurm and not settings.master_addr:
        raise RecipeError(
            f"--nodes {nodes} needs --master-addr (or MASTER_ADDR): the address of the node "
            "with --node-rank 0, which every node must reach; 127.0.0.1 would make each node "
            "wait for itself"
        )
    workers = per_node * nodes
    freq = update_freq(settings.batch, workers, max_tokens)
    a, b = parse_batch(settings.batch)
    unit = "CPU process(es)" if settings.cpu else "GPU(s)"
    arithmetic = (
        f"{settings.batch} = {a * b:,} tokens per update = {nodes} node(s) x {per_node} {unit} "
        f"x --max-tokens {max_tokens} x --update-freq {freq}"
    )

    # --- precision
    precision = settings.precision or ("fp32" if settings.cpu else "recipe")  # CPU_CHANGES["fp32"]
    if settings.cpu and precision == "recipe":
        raise RecipeError(
            f"--cpu --precision recipe: the recipe's {' '.join(recipe['fp16'][:1])} needs CUDA in "
            "fairseq 0.12 (its fp16 optimizer files the fp32 master weights by CUDA device, and "
            "a gradient overflow makes a CUDA tensor); on a CPU use --precision fp32 (the "
            "default with --cpu) or amp"
        )
    precision_flags = recipe["fp16"] if precision == "recipe" else PRECISIONS[precision]

    # --- when training stops and what it keeps: the averaging window's epochs (training stops
    # at its last epoch and keeps exactly its epochs), or --updates: one checkpoint at the end
    updates = settings.updates
    if updates is not None:
        if settings.avg_epochs:
            raise RecipeError("--updates stops the run by updates and keeps no epoch checkpoints; "
                              "--avg-epochs chooses epochs to average: give one of them")  # fmt: skip
        if updates < 1:
            raise RecipeError(f"--updates must be at least 1; got {updates}")
        stop = ["--max-update", str(updates), "--save-interval-updates", str(updates), "--no-epoch-checkpoints"]
        keep, avg_epochs = [], ""
    else:
        window = parse_window(settings.avg_epochs) if settings.avg_epochs else recipe["window"]
        stop = ["--max-epoch", str(window[1]), *recipe["stop"]]
        keep = ["--keep-last-epochs", str(window[1] - window[0] + 1)]
        avg_epochs = f"{window[0]}-{window[1]}"
        every = SAVE_EVERY[recipe_name] if settings.save_every is None else settings.save_every
        if every < 0:
            raise RecipeError(f"--save-every must be 0 (epoch ends only) or a number of updates; got {every}")
        if every:  # the latest interval checkpoint is kept (checkpoint_last.pt is a copy of it)
            keep += ["--save-interval-updates", str(every), "--keep-interval-updates", "1"]

    arch, size_flags = SIZES[size]
    lr = recipe["lr"]
    if recipe_name == "huge" and size == "big":
        lr = BIG_HUGE_LR
    seed = settings.seed if settings.seed is not None else recipe["seed"]
    save_dir = Path(settings.save_dir or Path("runs") / Path(settings.data).name /
                    f"{settings.method}-{enc}-{dec}-{settings.batch}")  # fmt: skip
    method_flags = list(METHODS[settings.method])
    profile = None
    if settings.method == "admin-profiled" and "--fp16" in recipe["fp16"]:
        # fairseq's FP16Optimizer keeps fp32 master weights made before the first batch, so
        # under the recipe's plain --fp16 the profile cannot be taken inside the training
        # run: as in Transformer-Clinic, a profiling run on one worker writes it, and the
        # training run reads it. The same two steps run whatever --precision is chosen, so
        # that a CPU or fp32 run of the recipe is the GPU run but for its precision flags.
        profile = save_dir / "admin_profile.json"
        method_flags = ["--admin-init", "--admin-profile-from", str(profile)]
    flags = [
        str(data_bin), "--user-dir", str(Path(__file__).resolve().parents[1]),
        "--arch", arch, *size_flags, "--encoder-layers", str(enc), "--decoder-layers", str(dec),
        *method_flags, *COMMON, *recipe["optimizer"],
        "--lr", lr, "--warmup-updates", recipe["warmup"], "--weight-decay", recipe["weight_decay"],
        "--dropout", recipe["dropout"], "--attention-dropout", recipe["attention_dropout"],
        "--activation-dropout", recipe["activation_dropout"],
        "--max-tokens", str(max_tokens), "--update-freq", str(freq), *stop,
        "--save-dir", str(save_dir), *keep,
        "--log-format", "json", "--log-interval", str(settings.log_interval),
        "--tensorboard-logdir", str(save_dir / "tensorboard"), "--seed", str(seed),
        *precision_flags,
    ]  # fmt: skip
    if settings.monitor is not None and settings.monitor < 0:
        raise RecipeError(f"--monitor must be a number of updates (0: off); got {settings.monitor}")
    if settings.monitor:
        flags += ["--admin-monitor-interval", str(settings.monitor)]
    if settings.cpu:  # CPU_CHANGES, and nothing else
        flags += ["--cpu"]
        if workers > 1:
            flags += CPU_DISTRIBUTED
    flags += ["--distributed-world-size", str(workers)]
    flags = merge_flags(flags, list(settings.extra))  # the user's flags replace ours, each once

    worker_flags = [] if settings.hang_timeout is None else ["--hang-timeout", f"{settings.hang_timeout:g}"]
    if settings.slurm:
        # srun inside sbatch does not inherit --cpus-per-task (Slurm >= 22.05): ask again
        cpus = env.get("SLURM_CPUS_PER_TASK")
        port = [] if settings.master_port is None else ["--master-port", str(settings.master_port)]
        launcher = ["srun", "--nodes", str(nodes), "--ntasks-per-node", str(per_node),
                    *(["--cpus-per-task", cpus] if cpus else []), "--kill-on-bad-exit=1",
                    *_launch("slurm", [*port, *worker_flags])]  # fmt: skip
    elif workers == 1:
        launcher = _launch("none")
    elif nodes == 1:
        # torchrun with its store on the loopback address (plain --standalone listens on all)
        launcher = [sys.executable, "-m", "admin_fairseq.local_torchrun", "--nproc-per-node", str(per_node),
                    "-m", *_launch("torchrun", worker_flags)[2:]]  # fmt: skip
    else:
        launcher = [
            _which("torchrun"), "--nnodes", str(nodes), "--node-rank", str(node_rank),
            "--nproc-per-node", str(per_node), "--master-addr", settings.master_addr,
            "--master-port", str(settings.master_port or 29500), "-m", *_launch("torchrun", worker_flags)[2:],
        ]  # fmt: skip
    commands = [[*launcher, *flags]]
    if profile is not None:
        # one worker, the same flags otherwise: profiles the first batch and stops
        single = [("--admin-profile-to" if f == "--admin-profile-from" else f) for f in flags]
        at = len(single) - 1 - single[::-1].index("--distributed-world-size")
        single[at + 1] = "1"
        commands.insert(0, [*_launch("none"), *single])
    record = RunRecord(
        method=settings.method, encoder_layers=enc, decoder_layers=dec, batch=settings.batch,
        recipe=recipe_name, size=size, arch=arch, workers=workers, nodes=nodes,
        node_rank=node_rank, per_node=per_node, cpu=bool(settings.cpu), precision=precision,
        max_tokens=max_tokens, update_freq=freq, arithmetic=arithmetic,
        avg_epochs=avg_epochs, data=str(settings.data), save_dir=str(save_dir),
        seed=int(seed), fairseq_flags=flags, command=shlex.join(commands[-1]),
        profile_command=shlex.join(commands[0]) if profile is not None else None,
    )  # fmt: skip
    return commands, record


def rank_table(record):
    """One line per node: which global ranks and devices it runs."""
    per = record.per_node
    device = "cpu" if record.cpu else "cuda"
    lines = []
    for node in range(record.nodes):
        first, last = node * per, node * per + per - 1
        devices = f"{device}:0-{per - 1}" if per > 1 else f"{device}:0"
        lines.append(f"node {node}: ranks {first}-{last} ({devices})" if per > 1
                     else f"node {node}: rank {first} ({devices})")  # fmt: skip
    return lines


def checkpoint_bytes(record):
    """``(parameters, bytes)`` of one checkpoint of the model this run builds: its parameters
    (built on the meta device with the run's flags and the data's dictionary) times
    :data:`CHECKPOINT_BYTES_PER_PARAMETER`. ``(None, None)`` when the data folder has no
    dictionary yet."""
    flags = list(record.fairseq_flags)
    if not (Path(flags[0]) / f"dict.{_src_lang(flags[0])}.txt").exists():
        return None, None
    import torch

    from admin_fairseq.build import build_from_flags

    # the profile file may not exist yet; writing one changes no shape and reads nothing
    build_flags = [("--admin-profile-to" if f == "--admin-profile-from" else f) for f in flags[1:]]
    with torch.device("meta"):
        model, _, _ = build_from_flags(flags[0], build_flags)
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    return params, params * CHECKPOINT_BYTES_PER_PARAMETER


def _src_lang(data_bin):
    found = sorted(Path(data_bin).glob("dict.*.txt"))
    return found[0].name.split(".")[1] if found else "src"


#: what the evaluate step's averaged.pt holds of a checkpoint: the fp32 weights, no moments
AVERAGED_SHARE = 4 / CHECKPOINT_BYTES_PER_PARAMETER


def disk_peak(flags):
    """``{part: full checkpoints}`` that the run's folder holds at its fullest, read from its
    final flags: the epoch and interval checkpoints kept, ``checkpoint_last.pt`` and
    ``checkpoint_best.pt``, and what a save adds for a moment: fairseq writes the new epoch
    or interval checkpoint before it deletes the oldest kept one, and copies it to
    ``checkpoint_last.pt`` (and ``checkpoint_best.pt``) through a temporary file. The
    evaluate step's ``averaged.pt`` comes after training, when nothing is being written:
    ``"averaged"`` is its share of one checkpoint (weights only)."""
    if "--no-save" in flags:
        return {}
    epochs = 0 if "--no-epoch-checkpoints" in flags else int(flag_value(flags, "--keep-last-epochs", -1))
    if epochs < 0:  # fairseq's default: keep every epoch checkpoint
        epochs = int(flag_value(flags, "--max-epoch", 0)) or 100
    interval = 0
    if int(flag_value(flags, "--save-interval-updates", 0)) > 0:
        interval = int(flag_value(flags, "--keep-interval-updates", -1))
        if interval < 0:  # keep every one
            interval = int(flag_value(flags, "--max-update", 0)) // int(flag_value(flags, "--save-interval-updates"))
    # a kept number is a rotation: the new checkpoint is written before the oldest goes
    rotating = ((epochs > 0 and int(flag_value(flags, "--keep-last-epochs", -1)) > 0)
                or (interval > 0 and int(flag_value(flags, "--keep-interval-updates", -1)) > 0))  # fmt: skip
    return {"epochs kept": epochs, "interval kept": interval, "last and best": 2,
            "the one being written": 1 if rotating else 0, "temporary copy": 1,
            "averaged": AVERAGED_SHARE}


def peak_count(peak):
    """The most checkpoints at once: training's peak, or what stays plus averaged.pt."""
    if not peak:
        return 0
    training = sum(v for k, v in peak.items() if k != "averaged")
    after = peak["epochs kept"] + peak["interval kept"] + peak["last and best"] + peak["averaged"]
    return max(training, after)


def _free_bytes(path):
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(record, log=print):
    """Print the size of one checkpoint, the most the run's folder holds at once
    (:func:`disk_peak`), and the free space of the save dir's disk; raise RecipeError when
    they cannot fit."""
    params, one = checkpoint_bytes(record)
    if one is None:
        log("[train] checkpoint size: unknown until the data is prepared (needs its dictionary)")
        return None
    peak = disk_peak(record.fairseq_flags)
    count = peak_count(peak)
    need, free = one * count, _free_bytes(record.save_dir)
    gb = 1e9
    parts = ", ".join(f"{k} {v:g}" for k, v in peak.items() if v and k != "averaged")
    log(f"[train] {params:,} parameters: one checkpoint about {one / gb:.2f} GB; at its fullest the "
        f"run's folder holds {count:g} ({parts}; then averaged.pt, {AVERAGED_SHARE:.2g} of one): "
        f"{need / gb:.2f} GB; free on the save dir's disk: {free / gb:.2f} GB")  # fmt: skip
    if need > free:
        raise RecipeError(
            f"the run's folder needs up to {count:g} checkpoints of about {one / gb:.2f} GB "
            f"({need / gb:.2f} GB) but {record.save_dir} has {free / gb:.2f} GB free; free space, "
            "choose another --save-dir, or keep fewer after -- (e.g. --keep-last-epochs N, which "
            "narrows the averaging window, or --no-epoch-checkpoints)"
        )
    return {"parameters": params, "checkpoint_bytes": one, "peak": peak, "peak_count": count,
            "free_bytes": free}


def check_fairseq_flags(commands):
    """Parse each command's fairseq-train flags (what follows ``--``) with fairseq's own
    parser, the plugin loaded, so that a flag fairseq does not know (``--admin-int``, a flag
    of another fairseq version) is refused before anything starts, with fairseq's reason."""
    import contextlib
    import io

    from admin_fairseq import plugin

    plugin.load()
    from fairseq import options

    for command in commands:
        flags = command[command.index("--") + 1:]
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                options.parse_args_and_arch(options.get_training_parser(), flags)
        except SystemExit:
            lines = err.getvalue().strip().splitlines() or ["(no message)"]
            reason = lines[-1].split("error: ", 1)[-1]
            raise RecipeError(f"fairseq-train would refuse this command: {reason}; check the "
                              "flags after -- (python -m admin_fairseq.recipes.train --help)") from None  # fmt: skip
