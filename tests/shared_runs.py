"""Data and trained models made once per test run and shared by every test process.

pytest-xdist runs the suite in several processes, each with its own session fixtures; a
Bible slice or a trained checkpoint built by a session fixture would be built once per
process. ``once`` builds a folder below the run's common temporary folder under a file
lock instead: the first process to ask builds it, the others wait and reuse it. A build
that fails leaves no mark of completion, so the next process to ask builds it again and
sees the same failure.

The README's fairseq example is one of them: its prepare command makes the ``bible`` data,
its fairseq-train and fairseq-generate commands run once as written (``readme_run``).
``MODELS`` names every small model that more than one test reads (deployment, export,
refusals, the variants' training); each is trained at most once per run, by the first
test that asks for it.
"""

import fcntl
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, USER_DIR, run_module, train_in_process

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


#: The README's fairseq example: a heading of README.md and the one bash block under it.
README_EXAMPLE = "## Train your own model with fairseq"


def readme_example():
    """The example's commands in order (prepare, fairseq-train, fairseq-generate), each as
    written there, continuation lines included; blank lines separate them."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split(README_EXAMPLE, 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [command.strip() for command in block.split("\n\n") if command.strip()]


def readme_argv(index):
    """The example's command ``index`` as an argument list, as bash splits it."""
    return shlex.split(readme_example()[index].replace("\\\n", " "))


def _readme_prepare_argv():
    argv = readme_argv(0)
    assert argv[:3] == ["python", "-m", "admin_fairseq.recipes.prepare"], argv
    return argv


def readme_data(root):
    """Where the example's prepare command, run in ``root``, writes its data."""
    argv = _readme_prepare_argv()
    return root / argv[argv.index("--out") + 1]


def readme_prepare(root):
    """The example's prepare command, run in ``root`` in this process: the module's ``main``
    on the command's arguments, as ``python -m`` runs it."""
    argv = _readme_prepare_argv()
    result = run_module(argv[2], *argv[3:], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]


def readme_run(folder, data):
    """The example's fairseq-train and fairseq-generate commands as written, in bash, in
    ``folder``: ``data/...`` there is the prepared ``data`` (the README's prepare command's
    output), ``admin_fairseq`` the plugin's folder, as in the repository root. Their output
    goes to ``folder/example.log``."""
    (folder / "admin_fairseq").symlink_to(REPO / "admin_fairseq")
    (folder / "data").mkdir()
    (folder / "data" / data.name).symlink_to(data)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n\n".join(readme_example()[1:])], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500)  # fmt: skip
    (folder / "example.log").write_text(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:]


def tiny_shape(width):
    """``transformer_admin_tiny`` at 3L-3L, ``width`` wide: feed-forward 2 x width, 2 heads
    (the preset's own number of heads, given explicitly)."""
    return ["--arch", "transformer_admin_tiny", "--encoder-layers", "3", "--decoder-layers", "3",
            "--encoder-embed-dim", str(width), "--decoder-embed-dim", str(width),
            "--encoder-ffn-embed-dim", str(2 * width), "--decoder-ffn-embed-dim", str(2 * width),
            "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"]  # fmt: skip


def tiny_training(warmup, max_tokens, max_update, seed):
    """Adam at lr 3e-3 (inverse square root, ``warmup`` updates) on label-smoothed cross
    entropy, ``max_tokens`` a batch, ``max_update`` updates, without a progress bar."""
    return ["--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "inverse_sqrt",
            "--warmup-updates", str(warmup), "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", "--max-tokens", str(max_tokens), "--max-update", str(max_update),
            "--seed", str(seed), "--no-progress-bar"]  # fmt: skip


#: 3L-3L, 64 wide, 250 updates on the Bible slice: enough for translations that are not
#: all alike, so that comparisons of decoders (fairseq-generate, CTranslate2) mean something.
#: Shared embeddings and sinusoidal positions, as in the recipes and the main job.
DEPLOY_SHAPE = tiny_shape(64)
DEPLOY_TRAIN = [*tiny_training(warmup=60, max_tokens=2048, max_update=250, seed=3),
                "--no-epoch-checkpoints", "--num-workers", "0", "--share-all-embeddings"]  # fmt: skip
#: 3L-3L, 32 wide, 120 updates, logged every 10: the export tests' models (tests/test_export.py)
#: and, for the variants they share, the training runs of
#: tests/test_cli_end_to_end.py::test_every_variant_trains_through_fairseq_train.
SMALL_SHAPE = tiny_shape(32)
SMALL_TRAIN = [*tiny_training(warmup=40, max_tokens=1024, max_update=120, seed=2),
               "--log-format", "simple", "--log-interval", "10", "--no-epoch-checkpoints", "--num-workers", "0"]  # fmt: skip
SMALL_SHARED = [*SMALL_SHAPE, *SMALL_TRAIN, "--layernorm-embedding", "--share-all-embeddings"]
DEPLOY_MODELS = {
    "vector omega": [*DEPLOY_SHAPE, *DEPLOY_TRAIN, "--admin-init", "--admin-as-parameter"],
    "scalar omega": [*DEPLOY_SHAPE, *DEPLOY_TRAIN, "--admin-init"],
    "deepnet": [*DEPLOY_SHAPE, *DEPLOY_TRAIN, "--deepnet"],
}
MODELS = {
    **DEPLOY_MODELS,
    "small vector omega": [*SMALL_SHARED, "--admin-init", "--admin-as-parameter"],
    "small profiled omega": [*SMALL_SHARED, "--admin-init", "--admin-profile"],
    "small deepnet": [*SMALL_SHARED, "--deepnet"],
}


def train(bible, save_dir, flags):
    """fairseq-train on the Bible slice, in this process (``conftest.train_in_process``); the
    path of its ``checkpoint_last.pt``. What it printed is kept next to the save dir, in
    ``train.log``."""
    result = train_in_process(bible["bin"], "--user-dir", USER_DIR, *flags, "--save-dir", save_dir,
                              cwd=save_dir.parent)  # fmt: skip
    (save_dir.parent / "train.log").write_text(result.stdout)
    return save_dir / "checkpoint_last.pt"


def train_log(checkpoint):
    """What fairseq-train printed while :func:`train` made ``checkpoint`` (a file in its
    save dir)."""
    return (Path(checkpoint).parent.parent / "train.log").read_text()


def trained_model(root, bible, name):
    """The checkpoint of ``MODELS[name]``, trained once for the whole run (read only: a
    test that changes it copies it first); its training log: :func:`train_log`."""
    folder = once(root, "model-" + name.replace(" ", "-"), lambda out: train(bible, out / "ckpt", MODELS[name]))
    return folder / "ckpt" / "checkpoint_last.pt"
