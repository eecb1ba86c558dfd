"""The recipes' cluster paths, run for real on CPU processes.

Two hosts: the recipe's train step on two network namespaces joined by a veth pair. Each
namespace is a host with its own network stack and one address; node 0 listens on its
address only, so node 1 can reach it over the veth link and nowhere else. Both nodes run
``python -m admin_fairseq.recipes.train --nodes 2 --node-rank R --master-addr <node 0>``
(torchrun, then ``admin_fairseq.launch``, then fairseq-train on gloo), one CPU process per
node, over one save dir as on a cluster's shared file system.

They must give the weights of one process with ``--update-freq 2`` on the same batches;
the Slurm side of the cluster paths is tests/test_slurm.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cluster_runs import FAIRSEQ, RUN, max_difference, one_process as reference, weights
from conftest import require_cluster_tools

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PORT = "29500"  # inside fresh namespaces nothing else listens
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


@pytest.fixture(scope="module")
def one_process(shared, bible_recipe_data):
    return reference(shared, bible_recipe_data)


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
    two, updates_two = weights(shared)
    assert updates_one == updates_two == 60
    worst = max_difference(one, two)
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
    _, saved = weights(broken)
    assert 20 <= saved < 60

    # both commands again: they resume from the shared checkpoint_last.pt and end as the
    # uninterrupted run did
    codes, outs, _ = _two_nodes(hosts, bible_recipe_data, broken)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert f"(epoch 1 @ {saved} updates)" in outs[0]
    resumed, updates = weights(broken)
    assert updates == 60
    worst = max_difference(resumed, two)
    print(f"max |w(frozen, killed and resumed) - w(uninterrupted)| = {worst:.3g}")
    assert worst < 1e-4, worst
    assert json.loads((broken / "run.json").read_text())["status"] == "finished"
