"""Data and trained models made once per test run and shared by every test process.

pytest-xdist runs the suite in several processes, each with its own session fixtures; a
Bible slice or a trained checkpoint built by a session fixture would be built once per
process. ``once`` builds a folder below the run's common temporary folder under a file
lock instead: the first process to ask builds it, the others wait and reuse it. A build
that fails leaves no mark of completion, so the next process to ask builds it again and
sees the same failure.

``MODELS`` names every small model that more than one test reads (deployment, export,
refusals); each is trained at most once per run, by the first test that asks for it.
"""

import fcntl
import os
import shutil
from pathlib import Path

from conftest import USER_DIR, run_cli

DONE = ".complete"


def shared_root(tmp_path_factory):
    """The folder all test processes of this run share (xdist gives each process a
    sub-folder of it as its own base)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "shared"
    path.mkdir(exist_ok=True)
    return path


def once(root, name, make):
    """``root/name``, made by ``make(folder)`` unless a process of this run already made it."""
    target = Path(root) / name
    with open(Path(root) / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / DONE).exists():
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            make(target)
            (target / DONE).write_text("")
    return target


#: 3L-3L, 64 wide, 250 updates on the Bible slice: enough for translations that are not
#: all alike, so that comparisons of decoders (fairseq-generate, CTranslate2) mean something.
#: Shared embeddings and sinusoidal positions, as in the recipes and the main job.
DEPLOY_SHAPE = [
    "--arch", "transformer_admin_tiny", "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-embed-dim", "64", "--decoder-embed-dim", "64",
    "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]  # fmt: skip
DEPLOY_TRAIN = [
    "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
    "--warmup-updates", "60", "--criterion", "label_smoothed_cross_entropy",
    "--label-smoothing", "0.1", "--max-tokens", "2048", "--max-update", "250", "--seed", "3",
    "--no-progress-bar", "--no-epoch-checkpoints", "--num-workers", "0", "--share-all-embeddings",
]  # fmt: skip
MODELS = {
    "vector omega": [*DEPLOY_SHAPE, *DEPLOY_TRAIN, "--admin-init", "--admin-as-parameter"],
    "scalar omega": [*DEPLOY_SHAPE, *DEPLOY_TRAIN, "--admin-init"],
    "deepnet": [*DEPLOY_SHAPE, *DEPLOY_TRAIN, "--deepnet"],
}


def train(bible, save_dir, flags):
    """fairseq-train on the Bible slice; the path of its ``checkpoint_last.pt``."""
    run_cli("fairseq-train", bible["bin"], "--user-dir", USER_DIR, *flags, "--save-dir", save_dir,
            cwd=save_dir.parent)  # fmt: skip
    return save_dir / "checkpoint_last.pt"


def trained_model(root, bible, name):
    """The checkpoint of ``MODELS[name]``, trained once for the whole run (read only: a
    test that changes it copies it first)."""
    folder = once(root, "model-" + name.replace(" ", "-"), lambda out: train(bible, out / "ckpt", MODELS[name]))
    return folder / "ckpt" / "checkpoint_last.pt"
