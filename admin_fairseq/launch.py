"""Start one fairseq-train worker with every distributed setting explicit.

    python -m admin_fairseq.launch --launcher none -- DATA --arch ... --distributed-world-size 1
    torchrun --nnodes 2 --node-rank R --nproc-per-node 8 --master-addr HOST --master-port 29500 \
        -m admin_fairseq.launch --launcher torchrun -- DATA ... --distributed-world-size 16
    srun python -m admin_fairseq.launch --launcher slurm -- DATA ... --distributed-world-size 16

The recipes' train step starts every run through this module. It reads the launcher's own
variables (torchrun: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; Slurm: ``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID``, the job's node list), checks them against the world
size the recipe computed (``--distributed-world-size`` among the fairseq flags), and turns
them into fairseq's flags ``--distributed-rank``, ``--distributed-init-method``,
``--device-id`` and ``--distributed-no-spawn``. fairseq then guesses nothing: its own
environment rules (which divide by the GPU count on a CPU, and let a scheduler's
``WORLD_SIZE`` override the flag) never run. Variables that contradict the flags stop the
worker with a message that names them.

Under Slurm, rank 0 listens on ``--master-port`` or, without it, on a port derived from the
job's id (:func:`job_port`), so that two jobs on one node do not collide. A worker uses the
GPU its local rank names when it sees every GPU of its node, or the one GPU it sees when the
cluster gives each task its own (``--gpus-per-task=1``, ``--gpu-bind``). It prints the CPUs
it may run on, and sets torch's threads to them unless ``OMP_NUM_THREADS`` is set.

Rank 0 prints to the console (the train step tees it into ``train.log``); every other rank
writes to ``{--log-dir}/rank{R}.log`` (default: ``{save_dir}/logs``), so that a run's
folder holds one log per rank and one console log. Each worker also saves and stops on
SIGUSR1/SIGTERM and ends itself when the run hangs (:mod:`admin_fairseq.resilience`).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from admin_fairseq.errors import UserError
from admin_fairseq.fairseq_flags import flag_value
from admin_fairseq.argtypes import nonnegative_float, port

LAUNCHERS = ("none", "torchrun", "slurm")
TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class LaunchError(UserError):
    """The launcher's environment does not match the run; the message says what to change."""


def _int(env, name):
    try:
        return int(env[name])
    except KeyError:
        raise LaunchError(f"{name} is not set") from None
    except ValueError:
        raise LaunchError(f"{name}={env[name]!r} is not an integer") from None


def job_port(job_id):
    """Rank 0's port for Slurm job ``job_id`` when none is given: 15000-29999, below Linux's
    ephemeral ports, different for jobs whose ids differ by less than 15000."""
    return 15000 + int(job_id) % 15000


def device_index(local_rank, visible):
    """The CUDA device a worker with ``local_rank`` uses when it sees ``visible`` GPUs: its
    local rank when it sees the node's GPUs, 0 when it sees only its own."""
    if visible == 1:
        return 0
    if local_rank < visible:
        return local_rank
    raise LaunchError(
        f"local rank {local_rank} but this task sees {visible} GPU(s) (CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); give the job one GPU per task "
        "(--gpus-per-task=1) or every task all GPUs of its node (--gpus-per-node)"
    )


def _first_host(nodelist):
    """The first host name of a Slurm node list (``node[01-04]`` -> ``node01``)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as err:
        raise LaunchError(f"scontrol could not expand the node list {nodelist!r}: {err}") from err
    if not out:
        raise LaunchError(f"the node list {nodelist!r} names no host")
    return out[0]


def plan(launcher, flags, env, master_port=None):
    """``{"rank", "world_size", "local_rank", "init_method"}`` of this worker.

    ``flags`` are the fairseq-train flags (they must carry ``--distributed-world-size``);
    ``env`` is the process environment. Raises :class:`LaunchError` on any contradiction.
    """
    if launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher must be one of {', '.join(LAUNCHERS)}; got {launcher!r}")
    world = flag_value(flags, "--distributed-world-size")
    if world is None:
        raise LaunchError("the fairseq flags must give --distributed-world-size (the recipe's "
                          "number of workers), so that nothing is inferred")  # fmt: skip
    world = int(world)
    given = {k: env[k] for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK") if k in env}
    if launcher == "none":
        if world != 1:
            raise LaunchError(f"--launcher none starts one process, but --distributed-world-size "
                              f"is {world}; start the workers with torchrun or srun")  # fmt: skip
        wrong = {k: v for k, v in given.items() if v != ("1" if k == "WORLD_SIZE" else "0")}
        if wrong:
            raise LaunchError(
                "the environment has " + ", ".join(f"{k}={v}" for k, v in wrong.items()) +
                " (left by a launcher or scheduler), but this run is one process "
                "(--distributed-world-size 1); unset them, or run several workers with the "
                "train step's --nodes/--gpus/--slurm"
            )
        return {"rank": 0, "world_size": 1, "local_rank": 0, "init_method": None}
    if launcher == "torchrun":
        missing = [k for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
                   if k not in env]  # fmt: skip
        if missing:
            raise LaunchError(f"--launcher torchrun, but {', '.join(missing)} is not set: start "
                              "this module with torchrun (python -m torch.distributed.run)")  # fmt: skip
        rank, size, local = _int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK")
        if size != world:
            raise LaunchError(
                f"torchrun started WORLD_SIZE={size} workers, but the recipe computed "
                f"--distributed-world-size {world} (nodes x processes per node); the batch "
                "arithmetic would be wrong. Check --nnodes/--nproc-per-node against the train "
                "step's --nodes and --gpus"
            )
        return {"rank": rank, "world_size": world, "local_rank": local, "init_method": "env://"}
    # slurm
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    missing = [k for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID") if k not in env]
    if missing or not nodelist:
        missing += [] if nodelist else ["SLURM_JOB_NODELIST"]
        raise LaunchError(f"--launcher slurm, but {', '.join(missing)} is not set: start this "
                          "module with srun inside a Slurm allocation")  # fmt: skip
    rank, size, local = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS"), _int(env, "SLURM_LOCALID")
    if size != world:
        raise LaunchError(
            f"srun started SLURM_NTASKS={size} tasks, but the recipe computed "
            f"--distributed-world-size {world}; give the job one task per GPU "
            "(#SBATCH --ntasks-per-node = GPUs per node)"
        )
    contradict = {k: v for k, v in given.items()
                  if v != str({"WORLD_SIZE": size, "RANK": rank, "LOCAL_RANK": local}[k])}  # fmt: skip
    if contradict:
        raise LaunchError(
            "the environment has " + ", ".join(f"{k}={v}" for k, v in contradict.items()) +
            f" but Slurm says SLURM_NTASKS={size}, SLURM_PROCID={rank}, SLURM_LOCALID={local}; "
            "unset the torch launcher variables in the job script"
        )
    if master_port is None:
        if "SLURM_JOB_ID" not in env:
            raise LaunchError("--launcher slurm needs --master-port or SLURM_JOB_ID (rank 0's port)")
        master_port = job_port(env["SLURM_JOB_ID"])
    init = f"tcp://{_first_host(nodelist)}:{int(master_port)}"
    return {"rank": rank, "world_size": world, "local_rank": local, "init_method": init}


def fairseq_argv(flags, worker, device=None):
    """fairseq-train's argv for ``worker`` (a :func:`plan`): ``flags`` plus the explicit
    distributed settings when there is more than one worker; ``device`` (default: the local
    rank) is the CUDA device index (:func:`device_index`)."""
    if worker["world_size"] == 1:
        return list(flags) if device in (None, 0) else [*flags, "--device-id", str(device)]
    return [*flags, "--distributed-rank", str(worker["rank"]),
            "--distributed-init-method", worker["init_method"], "--distributed-no-spawn",
            "--device-id", str(worker["local_rank"] if device is None else device)]  # fmt: skip


def _visible_gpus():
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _redirect_output(path):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    asks_help = any(a in ("-h", "--help") for a in argv[:argv.index("--") if "--" in argv else None])
    if "--" not in argv and not asks_help:
        print("launch: error: put the fairseq-train flags after --", file=sys.stderr)
        return 2
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m admin_fairseq.launch", allow_abbrev=False,
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--launcher", required=True, choices=LAUNCHERS)
    parser.add_argument("--master-port", type=port, help="Slurm: the port rank 0 listens on "
                        "(default: derived from SLURM_JOB_ID)")  # fmt: skip
    parser.add_argument("--hang-timeout", type=nonnegative_float, default=None, help="seconds without an "
                        "update, validation or checkpoint after which a worker of a run with "
                        "several ends itself (default "
                        "600; 0: never)")  # fmt: skip
    parser.add_argument("--log-dir", help="where ranks other than 0 write rank{R}.log "
                        "(default: {save_dir}/logs)")  # fmt: skip
    args = parser.parse_args(argv[:cut])
    flags = argv[cut + 1:]
    try:
        worker = plan(args.launcher, flags, os.environ, args.master_port)
    except UserError as err:
        print(f"launch: error: {err}", file=sys.stderr)
        return 2
    if args.launcher != "torchrun":
        # env:// is not used: nothing may read the torch launcher variables after us
        for name in TORCH_VARS:
            os.environ.pop(name, None)
    if worker["rank"] != 0:
        log_dir = Path(args.log_dir or Path(flag_value(flags, "--save-dir", "checkpoints")) / "logs")
        _redirect_output(log_dir / f"rank{worker['rank']}.log")
    cpu = "--cpu" in flags
    try:
        device = None if cpu else device_index(worker["local_rank"], _visible_gpus() or worker["local_rank"] + 1)
    except UserError as err:
        print(f"launch: error: {err}", file=sys.stderr)
        return 2
    cpus = _cpus()
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(cpus)
    where = "cpu" if cpu else f"cuda:{device}"
    print(f"[launch] rank {worker['rank']} of {worker['world_size']} (local rank "
          f"{worker['local_rank']}, init {worker['init_method'] or 'none: one process'}, device "
          f"{where}, {cpus} CPU(s): {os.environ.get('OMP_NUM_THREADS') or cpus} thread(s))", flush=True)  # fmt: skip
    from admin_fairseq import plugin, resilience

    # This process imported admin_fairseq before fairseq reads --user-dir, and fairseq then
    # skips importing the plugin's models (it sees the package already in sys.modules): load
    # the plugin here, as fairseq would have.
    plugin.load()
    from fairseq_cli import train as fairseq_train

    timeout = resilience.HANG_TIMEOUT if args.hang_timeout is None else args.hang_timeout
    resilience.install(worker["rank"], worker["world_size"], timeout)
    sys.argv = ["fairseq-train", *fairseq_argv(flags, worker, device)]
    fairseq_train.cli_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
