"""Train one recipe run: a method, a depth and a batch setting, with the published settings.

    python -m admin_fairseq.recipes.train --data data/wmt17-en-de --method admin \
        --depth 18-18 --batch 8x4096 [--dry-run] [-- extra fairseq-train flags]

The batch setting ``AxB`` means A x B tokens per update (``8x4096`` = 32,768, ``128x4096`` =
524,288). The published settings (``8x4096``, ``128x4096``, and Transformer-Clinic's
WMT'14 En-Fr ``80x8000`` and ``256x5000``) bring their published hyper-parameters, listed
setting by setting with their sources in docs/published-settings.md; other settings (e.g.
``1x2048`` for a CPU) must name a ``--recipe``. The GPUs are detected (or given with
``--gpus``); ``--update-freq`` is computed so that nodes x GPUs x max-tokens x update-freq
equals the setting exactly, and the arithmetic is printed.

Every worker is started by ``python -m admin_fairseq.launch`` with its rank, world size,
init method and device given explicitly: one process directly, one node with several GPUs
through torchrun on the loopback address (:mod:`admin_fairseq.local_torchrun`), several nodes through ``torchrun`` (``--nodes``,
``--node-rank``, ``--master-addr``), or a Slurm allocation through ``srun`` (``--slurm``).
fairseq resumes from ``checkpoint_last.pt`` when the same command is run again. Flags after
``--`` go to ``fairseq-train`` too: one that the recipe also sets replaces the recipe's value
in place, so every flag appears once in the command that runs and in ``run.json``.
"""

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from admin_fairseq.command import EXIT_INTERRUPTED
from admin_fairseq.errors import UserError
from admin_fairseq.recipes import RecipeError
from admin_fairseq.recipes.plan import PRECISIONS, RunSettings, build, check_disk, check_fairseq_flags, rank_table
from admin_fairseq.recipes.published import METHODS, PUBLISHED_BATCHES, RECIPES, SAVE_EVERY, SIZES
from admin_fairseq.monitor import DEFAULT_INTERVAL, EXIT_UNSTABLE
from admin_fairseq.resilience import EXIT_SAVED, HANG_TIMEOUT, STOP_SIGNALS
from admin_fairseq.recipes.prepare import check_prepared
from admin_fairseq.recipes.record import RunRecord
from admin_fairseq.argtypes import check_fairseq_numbers, nonnegative_float, nonnegative_int, port, positive_int


def finished_before(record):
    """True when ``{save_dir}/run.json`` records that this very training ran to the end.

    Running a finished fairseq command again is not a no-op: fairseq resumes from
    ``checkpoint_last.pt``, performs one more update and only then notices --max-update, so
    the recipes skip such runs instead. The fairseq flags are compared (not the launcher
    line, which differs from node to node).
    """
    try:
        previous = RunRecord.read_if_any(record.save_dir)
    except RecipeError:  # not a record this version can read: train
        return False
    return previous is not None and previous.finished and previous.fairseq_flags == record.fairseq_flags


#: what the train step and fairseq write in a run folder (``--restart`` removes these, and
#: nothing else); fairseq's checkpoints are the ``checkpoint*.pt`` files
RUN_FILES = ("run.json", "train.log", "logs", "tensorboard", "eval", "admin_profile.json")


def run_folder_files(save_dir):
    """The files of a run folder that the train step or fairseq wrote."""
    save_dir = Path(save_dir)
    found = [save_dir / name for name in RUN_FILES if (save_dir / name).exists()]
    return found + sorted(save_dir.glob("checkpoint*.pt"))


def check_reuse(record, restart=False, log=print):
    """Refuse a run folder that holds a run with other settings, naming what differs and
    the two ways on; with ``restart``, remove that run's files (and nothing else) first."""
    try:
        previous = RunRecord.read_if_any(record.save_dir)
    except RecipeError as err:
        raise RecipeError(f"{err}; give another --save-dir") from None
    if previous is None:
        stray = [p for p in run_folder_files(record.save_dir) if p.name != "run.json"]
        if stray:
            raise RecipeError(f"{record.save_dir} holds {stray[0].name} but no run.json of the train "
                              "step; it was not written by this command: give another --save-dir")  # fmt: skip
        return
    differences = record.differences(previous)
    if not differences:
        return
    if restart:
        log(f"[train] --restart: removing the earlier run's files in {record.save_dir}")
        for path in run_folder_files(record.save_dir):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    shown = "; ".join(f"{name}: {old} before, {new} now" for name, new, old in differences[:5])
    raise RecipeError(
        f"{record.save_dir} holds a run with other settings ({shown}{' ...' if len(differences) > 5 else ''}); "
        "resuming it would mix the two. Give another --save-dir, or pass --restart to remove "
        "that run's checkpoints and logs and train from scratch"
    )


def resubmission_notes(record):
    """What changes when a run resumes on another number of workers (or another
    --max-tokens): the batch per update stays (``--update-freq`` is computed again), the
    order of the batches does not."""
    try:
        previous = RunRecord.read_if_any(record.save_dir)
    except RecipeError:
        return []
    if previous is None or not (Path(record.save_dir) / "checkpoint_last.pt").exists():
        return []
    before = (previous.workers, previous.max_tokens, previous.update_freq)
    now = (record.workers, record.max_tokens, record.update_freq)
    if before == now:
        return []
    return [
        f"resuming a run that trained on {before[0]} worker(s) x --max-tokens {before[1]} x "
        f"--update-freq {before[2]}; it goes on with {now[0]} x {now[1]} x {now[2]}: the same "
        f"{record.arithmetic.split(' = ')[1]} ({record.batch})",
        "the batches are cut and ordered differently from here on (fairseq shards them by "
        "worker), so the run will not repeat the one it would have been on the earlier workers",
    ]


#: torchrun's report of a failed worker: ``exitcode  : 75 (pid: 1234)``
_TORCHRUN_EXITCODE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")


def _tee(command, log_path, env, on_line, log):
    """Run ``command``, its output to ``log_path`` and ``on_line``/``log``; its exit status.
    torchrun exits 1 whatever status its workers ended with, so under torchrun the status
    of the worker its report names as the root cause (the first to fail, e.g. with
    :data:`EXIT_SAVED`; the others may have been ended by torchrun) is returned instead."""
    torchrun = Path(command[0]).name == "torchrun" or command[1:3] == ["-m", "admin_fairseq.local_torchrun"]
    reported = []
    with open(log_path, "a", encoding="utf-8") as logfile:
        logfile.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, bufsize=1)  # fmt: skip
        with _passing_stop_signals(proc):
            try:
                for line in proc.stdout:
                    logfile.write(line)
                    logfile.flush()
                    if torchrun and "Root Cause" in line:  # the first worker that failed comes next
                        reported.clear()
                    if torchrun and (found := _TORCHRUN_EXITCODE.match(line)):
                        reported.append(int(found.group(1)))
                    if on_line is not None:
                        on_line(line)
                    else:
                        log(line.rstrip("\n"))
                code = proc.wait()
            except KeyboardInterrupt:  # Ctrl-C reached fairseq too: let it end, its last words to the log only
                with contextlib.suppress(KeyboardInterrupt):
                    for line in proc.stdout:
                        logfile.write(line)
                    proc.wait(timeout=120)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                return EXIT_INTERRUPTED
    return reported[0] if code == 1 and reported and reported[0] > 0 else code


def _workers_under(root):
    """The pids of the ``admin_fairseq.launch`` workers below process ``root`` (itself
    included): torchrun does not pass SIGUSR1 on, so the workers are signalled directly."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "PID (NAME) STATE PPID ...": the name may hold spaces and parentheses
            text = stat.read_text()
            children.setdefault(int(text.rsplit(") ", 1)[1].split()[1]), []).append(int(text.split(" ", 1)[0]))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"admin_fairseq.launch" in cmdline:
            found.append(pid)
        else:
            todo += children.get(pid, [])
    return found


@contextlib.contextmanager
def _passing_stop_signals(proc):
    """While ``proc`` runs, SIGUSR1 and SIGTERM are passed on to it instead of ending this
    process: the workers save a checkpoint and stop (:mod:`admin_fairseq.resilience`), and
    the train step waits for them to record how the run ended."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def pass_on(number, frame):
        if proc.poll() is not None:
            return
        for pid in _workers_under(proc.pid) or [proc.pid]:  # srun: it passes them on to its tasks
            try:
                os.kill(pid, number)
            except ProcessLookupError:
                pass

    previous = {number: signal.signal(number, pass_on) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run(commands, record, log=print, on_line=None, env_extra=None):
    """Run the training command(s), teeing the output; return the exit code.

    ``env_extra`` is added to the environment of the commands (the main job sets
    ``OMP_NUM_THREADS`` there when it trains several models side by side).

    The node with ``--node-rank 0`` writes ``run.json`` (decisions, command, outcome) and
    ``train.log``; another node writes only ``logs/node{R}.log``. Ranks other than 0 write
    their own ``logs/rank{R}.log`` (see :mod:`admin_fairseq.launch`)."""
    save_dir = Path(record.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    first_node = record.node_rank == 0
    record = record.replace(started=time.strftime("%Y-%m-%d %H:%M:%S"), status="running",
                            exit_code=None, seconds=None)  # fmt: skip
    if first_node:
        record.write()
        log_path = save_dir / "train.log"
    else:
        (save_dir / "logs").mkdir(exist_ok=True)
        log_path = save_dir / "logs" / f"node{record.node_rank}.log"
    env = dict(os.environ)
    if record.cpu:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    env.update(env_extra or {})
    start = time.time()
    code = 0
    for command in commands:
        if first_node or command is commands[-1]:  # the profiling run happens on node 0 only
            if command is not commands[-1] and "--admin-profile-to" in command:
                profile = Path(command[command.index("--admin-profile-to") + 1])
                if profile.exists():
                    log(f"[train] {profile} exists; not profiling again")
                    continue
                log(f"[train] profiling run (one worker, first batch): {shlex.join(command)}")
            code = _tee(command, log_path, env, on_line, log)
            if code != 0:
                break
    if code == EXIT_SAVED:
        log(f"[train] the workers saved checkpoint_last.pt on a signal and stopped (exit {code}); "
            "run the same command again (a Slurm job script requeues itself) to resume")  # fmt: skip
    if first_node:
        status = {0: "finished", EXIT_SAVED: "stopped on a signal (saved; run again to resume)",
                  EXIT_UNSTABLE: "stopped by the stability monitor (--admin-monitor-stop)",
                  EXIT_INTERRUPTED: "interrupted (Ctrl-C; run again to resume from the last checkpoint)"}
        record.replace(status=status.get(code, f"failed (exit {code})"), exit_code=code,
                       seconds=round(time.time() - start, 1)).write()  # fmt: skip
    return code


def make_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --data DIR --method M --depth E-D --batch AxB [options] [-- fairseq flags]",
        allow_abbrev=False,
    )  # fmt: skip
    env = os.environ.get
    parser.add_argument("--data", required=True, help="folder made by the prepare step")
    parser.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    parser.add_argument("--depth", required=True, help="ENCODER-DECODER layers: 6-6, 18-18, 60-12, 100-100, ...")
    parser.add_argument("--batch", required=True, help="AxB tokens per update: "
                        f"{', '.join(PUBLISHED_BATCHES)} (published), or any other with --recipe")  # fmt: skip
    parser.add_argument("--recipe", help=f"hyper-parameter set: {', '.join(RECIPES)} (default: the "
                        "published one of --batch)")  # fmt: skip
    parser.add_argument("--size", help=f"model width: {', '.join(SIZES)} (default: iwslt for the "
                        "iwslt recipe, else base)")  # fmt: skip
    parser.add_argument("--max-tokens", type=positive_int, help="per-GPU tokens (default: the published "
                        "runs' for a published --batch, B for another AxB)")  # fmt: skip
    parser.add_argument("--avg-epochs", help="FIRST-LAST epochs the evaluation averages: training "
                        "stops at LAST and keeps these epochs (default: the recipe's published "
                        "window, 36-45 for regular/huge, 41-50 for clinic, 81-90 for iwslt)")  # fmt: skip
    parser.add_argument("--updates", type=positive_int, help="train N updates instead of the recipe's epochs "
                        "(fairseq's --max-update N): one checkpoint, at the end; the evaluate step "
                        "then translates with it (excludes --avg-epochs)")  # fmt: skip
    parser.add_argument("--precision", help=f"{', '.join(PRECISIONS)} (default: recipe = the "
                        "published fp16 flags on GPUs, fp32 with --cpu; bf16 = fp32 weights and "
                        "bf16 compute through autocast, no loss scaler: GPUs from A100/H100 on, "
                        "and CPUs)")  # fmt: skip
    parser.add_argument("--gpus", type=positive_int, help="GPUs per node (default: detected)")
    parser.add_argument("--cpu-workers", type=positive_int, default=1,
                        help="with --cpu: processes per node (default 1; gloo)")
    parser.add_argument("--nodes", type=positive_int, default=int(env("NNODES", 1)),
                        help="nodes (default $NNODES or 1); more than 1 runs torchrun")
    parser.add_argument("--node-rank", type=nonnegative_int, default=int(env("NODE_RANK", 0)),
                        help="this node's rank (default $NODE_RANK or 0)")
    parser.add_argument("--master-addr", default=env("MASTER_ADDR"),
                        help="address of the node with --node-rank 0 (default $MASTER_ADDR; "
                        "required with --nodes > 1)")  # fmt: skip
    parser.add_argument("--master-port", type=port, default=int(env("MASTER_PORT")) if env("MASTER_PORT") else None,
                        help="rank 0's port (default $MASTER_PORT, else 29500 with --nodes, "
                        "and with --slurm one derived from the job's id, so that two jobs on "
                        "one node do not collide)")  # fmt: skip
    parser.add_argument("--save-every", type=nonnegative_int, help="updates between interval checkpoints, "
                        "saved as well as the epoch ends' (default: the recipe's, "
                        f"{', '.join(f'{k} {v}' for k, v in SAVE_EVERY.items())}; 0: epoch ends only)")  # fmt: skip
    parser.add_argument("--hang-timeout", type=nonnegative_float, help="with several workers: seconds without an "
                        "update, validation or checkpoint after which each worker ends itself, "
                        f"naming a lost host as the likely cause (default {HANG_TIMEOUT}; 0: never)")  # fmt: skip
    parser.add_argument("--slurm", action="store_true", help="start the workers with srun inside "
                        "a Slurm allocation (nodes and tasks per node from the job)")  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="train on the CPU (small models only)")
    parser.add_argument("--save-dir", help="run folder (default runs/{data}/{method}-{E}-{D}-{batch})")
    parser.add_argument("--seed", type=nonnegative_int, help="default: the recipe's published seed (1111)")
    parser.add_argument("--log-interval", type=positive_int, default=100)
    parser.add_argument("--monitor", type=positive_int, nargs="?", const=DEFAULT_INTERVAL, metavar="N",
                        help="record the per-layer stability monitor every N updates (without N: "
                        f"{DEFAULT_INTERVAL}; the plugin's --admin-monitor-interval: branch shares, "
                        "omegas, gradient norms, output change, early warnings; docs/monitor.md); "
                        "off by default")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    parser.add_argument("--force", action="store_true", help="run even if run.json says this "
                        "command already finished (fairseq then adds one update)")  # fmt: skip
    parser.add_argument("--restart", action="store_true", help="when --save-dir holds a run with "
                        "other settings: remove its checkpoints and logs and train from scratch")  # fmt: skip
    return parser


#: the train step's options that are not part of the run itself
CLI_ONLY = ("force", "restart")


def parse(argv):
    """``(settings, options)``: the train step's command line as a :class:`RunSettings` (the
    flags after ``--`` as its ``extra``) and the options that only steer the command
    (:data:`CLI_ONLY`)."""
    argv = list(argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    values = vars(make_parser().parse_args(argv))
    options = {name: values.pop(name) for name in CLI_ONLY}
    return RunSettings(**values, extra=extra), options


def settings(argv):
    """The :class:`RunSettings` of a train-step command line (``[options] [-- flags]``)."""
    return parse(argv)[0]


def main(argv=None):
    args, options = parse(sys.argv[1:] if argv is None else argv)
    try:
        check_fairseq_numbers(args.extra)
    except ValueError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    try:
        commands, record = build(args)
        print(f"[train] {record.arithmetic}")
        if args.slurm or record.workers > 1:
            for line in rank_table(record):
                print(f"[train] {line}")
        if args.dry_run:
            if args.extra:  # the recipe's own flags are fairseq's (tested); the user's are parsed here
                check_fairseq_flags(commands)
            try:
                check_prepared(args.data)
            except RecipeError as err:  # a dry run may come before the data; say so
                print(f"[train] note: {err}; the run itself stops there")
            for command in commands:
                print(shlex.join(command))
            return 0
        # before the checks that load fairseq and build the model: a finished run's flags
        # passed them when it started, and a loop of runs (recipes/run.sh) run again skips
        # its finished ones at once
        if finished_before(record) and not options["force"]:
            print(f"[train] {record.save_dir} already finished this exact command (see its run.json); "
                  "nothing to do. --force trains it again from its last checkpoint")  # fmt: skip
            return 0
        check_reuse(record, restart=options["restart"])
        if args.extra:
            check_fairseq_flags(commands)
        check_prepared(args.data)
        check_disk(record)
    except UserError as err:
        print(f"train: error: {err}", file=sys.stderr)
        return 2
    for line in resubmission_notes(record):
        print(f"[train] {line}")
    print(f"[train] {record.command}")
    log_name = "train.log" if record.node_rank == 0 else f"logs/node{record.node_rank}.log"
    print(f"[train] log: {Path(record.save_dir) / log_name}")
    code = run(commands, record)
    if code == EXIT_INTERRUPTED:
        print(f"train: interrupted; the checkpoints in {record.save_dir} are kept and the same command "
              "resumes from the last one", file=sys.stderr)  # fmt: skip
    return code


if __name__ == "__main__":
    sys.exit(main())
