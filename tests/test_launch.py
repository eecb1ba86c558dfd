"""admin_fairseq.launch: every worker's rank, world size and init method come from the
launcher's variables checked against the recipe's world size; contradictions are errors."""

import subprocess
import sys
import textwrap

import pytest

from admin_fairseq.launch import LaunchError, fairseq_argv, plan

FLAGS = ["data/bin", "--arch", "transformer_admin", "--distributed-world-size", "16"]
TORCHRUN = {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "MASTER_ADDR": "h0", "MASTER_PORT": "29500"}


def test_torchrun_worker_gets_explicit_flags():
    worker = plan("torchrun", FLAGS, TORCHRUN)
    assert worker == {"rank": 9, "world_size": 16, "local_rank": 1, "init_method": "env://"}
    argv = fairseq_argv(FLAGS, worker)
    assert argv[len(FLAGS):] == ["--distributed-rank", "9", "--distributed-init-method", "env://",
                                 "--distributed-no-spawn", "--device-id", "1"]  # fmt: skip


def test_torchrun_world_size_that_contradicts_the_recipe_is_named():
    with pytest.raises(LaunchError, match=r"WORLD_SIZE=8 workers, but the recipe computed --distributed-world-size 16"):
        plan("torchrun", FLAGS, dict(TORCHRUN, WORLD_SIZE="8"))
    with pytest.raises(LaunchError, match="MASTER_ADDR is not set"):
        plan("torchrun", FLAGS, {k: v for k, v in TORCHRUN.items() if k != "MASTER_ADDR"})


def test_single_process_refuses_inherited_scheduler_variables():
    one = ["data/bin", "--distributed-world-size", "1"]
    assert plan("none", one, {"WORLD_SIZE": "1", "RANK": "0"})["init_method"] is None
    with pytest.raises(LaunchError, match=r"the environment has WORLD_SIZE=4, RANK=2 .* unset them"):
        plan("none", one, {"WORLD_SIZE": "4", "RANK": "2"})
    with pytest.raises(LaunchError, match="--launcher none starts one process"):
        plan("none", FLAGS, {})
    assert fairseq_argv(one, plan("none", one, {})) == one


def test_slurm_contradictions_are_named():
    """(The Slurm success path expands the node list with scontrol, which needs a configured
    Slurm: that belongs to a test against a real slurmctld.)"""
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "16", "SLURM_LOCALID": "3", "SLURM_JOB_NODELIST": "localhost"}
    with pytest.raises(LaunchError, match="SLURM_NTASKS=8 tasks, but the recipe computed --distributed-world-size 16"):
        plan("slurm", FLAGS, dict(env, SLURM_NTASKS="8"), master_port=1)
    with pytest.raises(LaunchError, match=r"the environment has RANK=0 but Slurm says .*SLURM_PROCID=3"):
        plan("slurm", FLAGS, dict(env, RANK="0"), master_port=1)
    with pytest.raises(LaunchError, match="SLURM_PROCID is not set"):
        plan("slurm", FLAGS, {k: v for k, v in env.items() if k != "SLURM_PROCID"}, master_port=1)
    with pytest.raises(LaunchError, match="--launcher slurm needs --master-port"):
        plan("slurm", FLAGS, env)


def test_cli_exits_2_with_the_message():
    result = subprocess.run([sys.executable, "-m", "admin_fairseq.launch", "--launcher", "torchrun",
                             "--", *FLAGS], capture_output=True, text=True, env={"PATH": "/usr/bin"})  # fmt: skip
    assert result.returncode == 2
    assert "launch: error: --launcher torchrun, but RANK, WORLD_SIZE" in result.stderr


def test_each_worker_uses_the_gpu_it_sees_and_slurm_jobs_get_their_own_port():
    from admin_fairseq.launch import LaunchError, device_index, job_port

    assert device_index(3, 8) == 3  # every task sees the node's 8 GPUs: its local rank
    assert device_index(3, 1) == 0  # one GPU per task (--gpus-per-task=1, --gpu-bind): its own
    assert device_index(0, 1) == 0
    with pytest.raises(LaunchError, match=r"local rank 5 but this task sees 4 GPU\(s\)"):
        device_index(5, 4)
    assert job_port(1) == 15001 and job_port(2) == 15002 and job_port(15000) == 15000
    assert all(15000 <= job_port(i) < 30000 for i in (0, 14999, 987654321))


def test_one_node_workers_listen_on_the_loopback_address_only(tmp_path):
    """The train step's one-node launcher (admin_fairseq.local_torchrun): every listening
    socket of the run is on 127.0.0.1, torchrun's store included (plain --standalone binds
    it to every interface); each worker reads the kernel's table of listening sockets."""
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent('''
        import os, sys
        import torch.distributed as dist
        dist.init_process_group("gloo")
        listening = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in list(f)[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A":  # LISTEN
                        listening.append(local)
        port = int(os.environ["MASTER_PORT"])
        store = [a for a in listening if int(a.rsplit(":", 1)[1], 16) == port]
        with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.txt"), "w") as out:
            out.write(f"rank {dist.get_rank()} {os.environ['MASTER_ADDR']} store {store}")
        dist.barrier()
        dist.destroy_process_group()
    '''))
    result = subprocess.run([sys.executable, "-m", "admin_fairseq.local_torchrun", "--nproc-per-node", "2",
                             str(worker), str(tmp_path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    for line in lines:  # 0100007F: 127.0.0.1 in the kernel's byte order; nothing on 0.0.0.0 or ::
        assert "127.0.0.1 store ['0100007F:" in line and "00000000:" not in line, line
