"""The recipes' cluster paths, run for real on CPU processes.

Two hosts: the recipe's train step on two network namespaces joined by a veth pair. Each
namespace is a host with its own network stack and one address; node 0 listens on its
address only, so node 1 can reach it over the veth link and nowhere else. Both nodes run
``python -m admin_fairseq.recipes.train --nodes 2 --node-rank R --master-addr <node 0>``
(torchrun, then ``admin_fairseq.launch``, then fairseq-train on gloo), one CPU process per
node, over one save dir as on a cluster's shared file system.

Slurm: Debian's slurmctld and slurmd on this machine (one node, two CPUs) with a munge
daemon of the test's own; ``recipes/slurm/train.sbatch`` submitted with ``sbatch`` runs
two tasks through srun and the launcher.

Both must give the weights of one process with ``--update-freq 2`` on the same batches.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from admin_fairseq.checkpoints import read as read_checkpoint


from conftest import REPO, free_port, require_cluster_tools

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PORT = "29500"  # inside fresh namespaces nothing else listens
#: the published settings need more tokens than this CPU has time for: 2x512 tokens per
#: update is 2 nodes x 1 process x 512 x update-freq 1, or 1 process x 512 x update-freq 2
RUN = ["--method", "admin", "--depth", "2-2", "--batch", "2x512", "--recipe", "regular",
       "--cpu", "--size", "cpu", "--log-interval", "5"]  # fmt: skip
FAIRSEQ = ["--max-update", "60", "--save-interval-updates", "20", "--no-epoch-checkpoints",
           "--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]  # fmt: skip
ENDS_WITHIN = 120  # seconds for a node to end once the run is over or broken
HANG_TIMEOUT = 15  # the train step's --hang-timeout in the two-host runs (its default is 600)


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def hosts():
    """Two network namespaces ``afq<pid>n0``/``n1`` joined by a veth pair, 10.213.7.1 and
    .2; removed afterwards, whatever happened."""
    require_cluster_tools("the two-host test", ["ip"])
    tag = f"afq{os.getpid() % 100000}"
    names = [f"{tag}n0", f"{tag}n1"]
    links = [f"{tag}v0", f"{tag}v1"]
    addrs = ["10.213.7.1", "10.213.7.2"]
    try:
        for ns in names:
            _ip("netns", "add", ns)
        _ip("link", "add", links[0], "type", "veth", "peer", "name", links[1])
        for ns, link, addr in zip(names, links, addrs):
            _ip("link", "set", link, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield [{"ns": ns, "link": link, "addr": addr} for ns, link, addr in zip(names, links, addrs)]
    finally:
        for ns in names:  # deleting a namespace deletes its end of the pair, and so the pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _node(host, rank, master, data, save_dir):
    """Start node ``rank`` in its namespace."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="",
               GLOO_SOCKET_IFNAME=host["link"])  # gloo: use the veth, not the host's name
    cmd = ["ip", "netns", "exec", host["ns"], sys.executable, "-m", "admin_fairseq.recipes.train",
           "--data", str(data), *RUN, "--nodes", "2", "--node-rank", str(rank),
           "--master-addr", master, "--master-port", PORT, "--hang-timeout", str(HANG_TIMEOUT),
           "--save-dir", str(save_dir), "--", *FAIRSEQ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip


def _signal_host(ns, number):
    """Send ``number`` to every process of the host: SIGSTOP freezes it as a host that
    vanished without closing its connections (power, kernel, network) looks to the others;
    SIGKILL ends it. (torchrun starts its workers in sessions of their own, so signalling
    the node's process group would miss them.)"""
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    assert pids, f"no process runs in {ns}"
    for pid in pids:
        try:
            os.kill(int(pid), number)
        except ProcessLookupError:
            pass


def _two_nodes(hosts, data, save_dir, freeze_node_1_when=None):
    """Run both nodes to the end; with ``freeze_node_1_when(line)``, freeze every process of
    node 1 (SIGSTOP) at the first line of node 0 that matches, and once node 0 has ended,
    kill them. Returns (exit codes, outputs, seconds node 0 ran on after the freeze)."""
    master = hosts[0]["addr"]
    procs = [_node(h, r, master, data, save_dir) for r, h in enumerate(hosts)]
    out0, frozen_at = [], None
    for line in procs[0].stdout:
        out0.append(line)
        if freeze_node_1_when is not None and frozen_at is None and freeze_node_1_when(line):
            _signal_host(hosts[1]["ns"], signal.SIGSTOP)
            frozen_at = time.monotonic()
    procs[0].wait(timeout=ENDS_WITHIN)
    after = None if frozen_at is None else time.monotonic() - frozen_at
    if frozen_at is not None:
        _signal_host(hosts[1]["ns"], signal.SIGKILL)
    out1 = procs[1].communicate(timeout=ENDS_WITHIN)[0]
    return [p.returncode for p in procs], ["".join(out0), out1], after


def _weights(save_dir):
    state = read_checkpoint(save_dir / "checkpoint_last.pt")
    return state["model"], state["optimizer_history"][-1]["num_updates"]


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def one_process(bible_recipe_data, tmp_path_factory):
    """The reference: one process, update-freq 2 (the same 1,024 tokens per update as two
    workers x 512), trained once for the module."""
    single = tmp_path_factory.mktemp("one-process") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(bible_recipe_data),
         *RUN, "--save-dir", str(single), "--", *FAIRSEQ],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 node(s) x 1 CPU process(es) x --max-tokens 512 x --update-freq 2" in result.stdout
    return _weights(single)


def test_two_hosts_equal_one_process_and_survive_a_frozen_node(hosts, bible_recipe_data, one_process, tmp_path):
    # two hosts, uninterrupted
    shared = tmp_path / "shared"
    codes, outs, _ = _two_nodes(hosts, bible_recipe_data, shared)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "2 node(s) x 1 CPU process(es) x --max-tokens 512 x --update-freq 1" in outs[0]
    assert f"--master-addr {hosts[0]['addr']}" in outs[1]
    rank1_log = (shared / "logs" / "rank1.log").read_text()
    assert "[launch] rank 1 of 2" in rank1_log
    # node 0 alone writes the run's record and log; node 1 its own logs
    assert sorted(p.name for p in (shared / "logs").iterdir()) == ["node1.log", "rank1.log"]
    assert json.loads((shared / "run.json").read_text())["status"] == "finished"
    one, updates_one = one_process
    two, updates_two = _weights(shared)
    assert updates_one == updates_two == 60
    worst = _max_difference(one, two)
    print(f"max |w(2 hosts) - w(1 process, update-freq 2)| = {worst:.3g}")
    assert worst < 1e-4, worst  # the same batches and sums: equal up to float summation order
    omega = "decoder.layers.1.encoder_attn_residual.omega"
    assert not torch.all(two[omega] == two[omega][0])  # the vector omega was trained

    # node 1 freezes after the checkpoint of update 20 (its connections stay open, as with a
    # host whose power, kernel or network went): node 0 must end within --hang-timeout,
    # naming the likely cause, instead of waiting for gloo's 30 minutes
    broken = tmp_path / "broken"
    codes, outs, after = _two_nodes(hosts, bible_recipe_data, broken,
                                    freeze_node_1_when=lambda line: "Saved checkpoint" in line)  # fmt: skip
    assert after is not None, "node 0 never saved a checkpoint"
    print(f"node 0 ended {after:.1f} s after node 1 froze (exit {codes[0]}; --hang-timeout {HANG_TIMEOUT})")
    assert codes[0] != 0 and codes[1] == -signal.SIGKILL
    assert after < HANG_TIMEOUT + 30, outs[0][-3000:]
    assert "another worker's host was lost (power, kernel, network) or its processes are frozen" in outs[0]
    record = json.loads((broken / "run.json").read_text())
    assert record["status"].startswith("failed"), record["status"]
    _, saved = _weights(broken)
    assert 20 <= saved < 60

    # both commands again: they resume from the shared checkpoint_last.pt and end as the
    # uninterrupted run did
    codes, outs, _ = _two_nodes(hosts, bible_recipe_data, broken)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert f"(epoch 1 @ {saved} updates)" in outs[0]
    resumed, updates = _weights(broken)
    assert updates == 60
    worst = _max_difference(resumed, two)
    print(f"max |w(frozen, killed and resumed) - w(uninterrupted)| = {worst:.3g}")
    assert worst < 1e-4, worst
    assert json.loads((broken / "run.json").read_text())["status"] == "finished"


# ------------------------------------------------------------------------------- Slurm


def _wait_for(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def slurm(tmp_path_factory):
    """A one-node Slurm cluster on this machine (2 CPUs, no GPU) and its own munge daemon;
    yields the environment for its clients. Every daemon is stopped afterwards."""
    require_cluster_tools("the Slurm tests", ["munged", "slurmctld", "slurmd", "sbatch"])
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o711)  # munged wants its socket's folder reachable by every user
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=afqtest
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmUser=root
SlurmdUser=root
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmdSpoolDir={root}/spool
StateSaveLocation={root}/state
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ReturnToService=2
MpiDefault=none
NodeName={host} CPUs=2 State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    pids = [root / "munged.pid", root / "slurmctld.pid", root / "slurmd.pid"]
    try:
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={root}/munge.sock",
                        f"--pid-file={pids[0]}", f"--log-file={root}/munged.log",
                        f"--seed-file={root}/munged.seed"], check=True)  # fmt: skip
        subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)

        def idle():
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env)
            return out.stdout.strip() == "idle"

        _wait_for(idle, "the Slurm node to be idle (see slurmctld.log / slurmd.log in " + str(root) + ")")
        yield env
    finally:
        for pid_file in reversed(pids):
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                try:
                    os.kill(pid, signal.SIGTERM)
                    _wait_for(lambda: not Path(f"/proc/{pid}").exists(), f"pid {pid} to stop", 30)
                except ProcessLookupError:
                    pass


def _submit(env, data, run, out, sbatch=(), fairseq=FAIRSEQ):
    """Submit ``recipes/slurm/train.sbatch`` for the test run; return the job's id."""
    result = subprocess.run(
        ["sbatch", "--parsable", "--gpus-per-node=0", "--time=15", f"--output={out}",
         f"--chdir={REPO}", *sbatch, str(REPO / "recipes/slurm/train.sbatch"),
         "--data", str(data), *RUN, "--save-dir", str(run), "--", *fairseq],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(";")[0]


def _job(env, job_id):
    """``scontrol show job``'s fields of the job."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, env=env).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _wait_job(env, job_id, out, timeout=600):
    """Wait until the job has ended for good (a requeued job runs again first); return its fields."""
    _wait_for(lambda: _job(env, job_id).get("JobState") in ENDED,
              f"job {job_id} to end (its output: {out})", timeout)  # fmt: skip
    return _job(env, job_id)


def _slurm_env(slurm, **extra):
    return dict(slurm, PYTHON=sys.executable, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **extra)


def test_two_jobs_on_one_node_and_the_cpus_a_task_was_given(slurm, bible_recipe_data, one_process, tmp_path):
    """Two 2-task jobs at once on the one node, without --master-port: each derives its
    port from its id, both finish, both train as one process with update-freq 2. A third
    job asks for 2 CPUs per task: its task sees (and uses) both."""
    from admin_fairseq.launch import job_port

    env = _slurm_env(slurm)
    env.pop("OMP_NUM_THREADS")  # the workers set their threads to the CPUs they were given
    # the script's #SBATCH lines ask for 8 GPUs a node; this cluster has 2 CPUs and none.
    # --oversubscribe: the three jobs share the two CPUs, so that they run at the same time
    jobs = {}
    for name, sbatch, fairseq in (
        ("a", ["--ntasks-per-node=2", "--cpus-per-task=1", "--oversubscribe"], FAIRSEQ),
        ("b", ["--ntasks-per-node=2", "--cpus-per-task=1", "--oversubscribe"], FAIRSEQ),
        ("cpus", ["--ntasks-per-node=1", "--cpus-per-task=2", "--oversubscribe"], [*FAIRSEQ, "--max-update", "2"]),
    ):  # fmt: skip
        out = tmp_path / f"{name}.out"
        jobs[name] = (_submit(env, bible_recipe_data, tmp_path / name, out, sbatch, fairseq), out)
    _wait_for(lambda: all(_job(env, j).get("JobState") != "PENDING" for j, _ in jobs.values()),
              "the three jobs to start together", 120)  # fmt: skip
    for name, (job_id, out) in jobs.items():
        state = _wait_job(env, job_id, out)["JobState"]
        log = out.read_text() if out.exists() else "(no job output)"
        assert state == "COMPLETED", log[-4000:]
        if name == "cpus":
            assert "srun --nodes 1 --ntasks-per-node 1 --cpus-per-task 2" in log
            assert "[launch] rank 0 of 1" in log and "2 CPU(s): 2 thread(s)" in log, log[-3000:]
            continue
        port = job_port(job_id)
        assert "1 node(s) x 2 CPU process(es) x --max-tokens 512 x --update-freq 1" in log
        assert "srun --nodes 1 --ntasks-per-node 2 --cpus-per-task 1" in log
        assert f":{port}, device cpu, 1 CPU(s): 1 thread(s))" in log, log[-3000:]
        assert "[launch] rank 1 of 2" in (tmp_path / name / "logs" / "rank1.log").read_text()
        record = json.loads((tmp_path / name / "run.json").read_text())
        assert record["status"] == "finished" and record["workers"] == 2
        two, updates = _weights(tmp_path / name)
        assert updates == 60
        worst = _max_difference(one_process[0], two)
        print(f"job {name} (port {port}): max |w(Slurm, 2 tasks) - w(1 process, update-freq 2)| = {worst:.3g}")
        assert worst < 1e-4, worst


def test_a_signalled_job_requeues_and_a_kill_while_writing_resumes_from_the_last_good_checkpoint(
        slurm, bible_recipe_data, one_process, tmp_path):  # fmt: skip
    """SIGUSR1 (what --signal=USR1@600 sends before the time limit) mid-run: the workers save
    and stop, the job requeues itself and resumes. On that second start, rank 0 is killed
    half-way through copying update 40's checkpoint to checkpoint_last.pt
    (tests/fault_injection): the job fails, checkpoint_last.pt is still the signal's, and the
    same job submitted again resumes from it. The end: the weights of one uninterrupted run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "fault_injection"))
    import fault_injection

    run, out = tmp_path / "run", tmp_path / "job.out"
    env = _slurm_env(slurm, **fault_injection.env(nth=1, on_start=1))
    job_id = _submit(env, bible_recipe_data, run, out, ["--ntasks-per-node=2", "--cpus-per-task=1"])

    def reached(updates):
        log = run / "train.log"
        return log.exists() and any(f'"num_updates": "{u}"' in log.read_text() for u in range(updates, 60))

    _wait_for(lambda: reached(20), "update 20 of the first start", 300)
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True, env=env)
    state = _wait_job(env, job_id, out)
    log = out.read_text()
    assert state["JobState"] == "FAILED" and state.get("Restarts") == "1", (state, log[-4000:])
    saved = [line for line in log.splitlines() if "checkpoint_last.pt saved at update" in line]
    assert saved, log[-4000:]
    at = int(saved[0].split("saved at update ")[1].split()[0])
    assert 20 <= at < 40
    assert "requeueing job" in log and "start 2 on" in log, log[-4000:]
    assert f"Loaded checkpoint {run}/checkpoint_last.pt (epoch 1 @ {at} updates)" in log
    assert "[fault_injection] killed while writing" in log, log[-4000:]
    assert (run / "checkpoint_1_40.pt").exists()  # written whole before the copy began
    assert _weights(run)[1] == at  # checkpoint_last.pt: whole, and the signal's
    assert json.loads((run / "run.json").read_text())["status"].startswith("failed")

    again = tmp_path / "again.out"
    job_id = _submit(_slurm_env(slurm), bible_recipe_data, run, again, ["--ntasks-per-node=2", "--cpus-per-task=1"])
    state = _wait_job(env, job_id, again)
    log = again.read_text()
    assert state["JobState"] == "COMPLETED", log[-4000:]
    assert f"(epoch 1 @ {at} updates)" in log
    weights, updates = _weights(run)
    assert updates == 60 and json.loads((run / "run.json").read_text())["status"] == "finished"
    worst = _max_difference(one_process[0], weights)
    print(f"signalled at update {at}, requeued, killed while writing update 40, resubmitted: "
          f"max |w - w(1 process, update-freq 2)| = {worst:.3g}")  # fmt: skip
    assert worst < 1e-4, worst
