"""What the cluster tests share (tests/test_cluster.py: two hosts; tests/test_slurm.py: a
local Slurm): the run they all train, its reference weights, and how they are compared."""

import os
import subprocess
import sys
import time

from admin_fairseq.checkpoints import read as read_checkpoint
from shared_runs import once

#: the published settings need more tokens than this CPU has time for: 2x512 tokens per
#: update is 2 nodes x 1 process x 512 x update-freq 1, or 1 process x 512 x update-freq 2
RUN = ["--method", "admin", "--depth", "2-2", "--batch", "2x512", "--recipe", "regular",
       "--cpu", "--size", "cpu", "--log-interval", "5"]  # fmt: skip
FAIRSEQ = ["--max-update", "60", "--save-interval-updates", "20", "--no-epoch-checkpoints",
           "--dropout", "0", "--attention-dropout", "0", "--activation-dropout", "0"]  # fmt: skip


def one_process(shared, data):
    """The reference: one process, update-freq 2 (the same 1,024 tokens per update as two
    workers x 512); trained once per test run, for every test process that asks."""

    def make(folder):
        result = subprocess.run(
            [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(data),
             *RUN, "--save-dir", str(folder / "run"), "--", *FAIRSEQ],
            capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "1 node(s) x 1 CPU process(es) x --max-tokens 512 x --update-freq 2" in result.stdout

    return weights(once(shared, "cluster-one-process", make) / "run")


def weights(save_dir):
    state = read_checkpoint(save_dir / "checkpoint_last.pt")
    return state["model"], state["optimizer_history"][-1]["num_updates"]


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def wait_for(check, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)
