"""Kill a training process while it writes ``checkpoint_last.pt``: a test-only hook, never
part of the package.

With :data:`ENV` (this folder first on ``PYTHONPATH``, ``AFQ_KILL_WRITING_LAST`` set to N),
the N-th time a process copies a checkpoint to a file whose name holds ``checkpoint_last``
(fairseq copies its epoch or interval checkpoint there), it writes half of the bytes and
then SIGKILLs itself: what a power cut, an out-of-memory kill or a scheduler's SIGKILL does
at the worst moment. With ``AFQ_KILL_ON_START`` set to K, it does so only when the Slurm
job's restart count (``SLURM_RESTART_COUNT``, 0 on the first start) is K.
"""

import os
import shutil
import signal
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def env(nth, on_start=None):
    """The environment that makes the ``nth`` copy to ``checkpoint_last`` kill its process."""
    extra = {"AFQ_KILL_WRITING_LAST": str(nth)}
    if on_start is not None:
        extra["AFQ_KILL_ON_START"] = str(on_start)
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return dict(extra, PYTHONPATH=path)


def install():
    nth = os.environ.get("AFQ_KILL_WRITING_LAST")
    if not nth:
        return
    on_start = os.environ.get("AFQ_KILL_ON_START")
    if on_start is not None and os.environ.get("SLURM_RESTART_COUNT", "0") != on_start:
        return
    copyfile = shutil.copyfile
    seen = [0]

    def dying_copyfile(src, dst, *args, **kwargs):
        if "checkpoint_last" not in Path(dst).name:
            return copyfile(src, dst, *args, **kwargs)
        seen[0] += 1
        if seen[0] < int(nth):
            return copyfile(src, dst, *args, **kwargs)
        data = Path(src).read_bytes()
        with open(dst, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            os.fsync(out.fileno())
        print(f"[fault_injection] killed while writing {dst} ({len(data) // 2} of {len(data)} bytes)",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    shutil.copyfile = dying_copyfile
