"""Shared helpers. Every path is resolved from this file, so the tests run from any folder."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIBLE_TEST_SIZE = 100
USER_DIR = REPO / "admin_fairseq"

logging.getLogger("fairseq").setLevel(logging.WARNING)


#: The files that take longest (``make test``'s --durations), collected first: pytest-xdist
#: hands out whole files in collection order, so a long file collected last would run on one
#: worker at the end while the others sit idle. The rest keep pytest's order.
SLOW_FILES_FIRST = (
    "test_slurm.py", "test_export.py", "test_gpu_faithful.py", "test_cli_end_to_end.py", "test_recipes.py",
    "test_kill_resume.py", "test_precision.py", "test_main_job.py", "test_gpu_faithful_radam.py",
    "test_gpu_check.py", "test_iwslt14.py", "test_deploy.py", "test_failure_modes.py", "test_readme.py",
    "test_cluster.py",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def cli_path(name):
    """The fairseq console script next to the running interpreter (the project's venv)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def run_cli(name, *args, cwd, check=True, timeout=900):
    """Run a fairseq console script (or ``python -m`` when ``name`` starts with ``-m``)."""
    if name.startswith("-m "):
        cmd = [sys.executable, "-m", name[3:], *map(str, args)]
    else:
        cmd = [cli_path(name), *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n--- output (tail) ---\n"
            f"{(result.stdout + result.stderr)[-6000:]}"
        )
    return result


def run_module(name, *args, env=None, cwd=None):
    """``python -m name args`` as the module's ``main(argv)`` in this process: the same code
    path as the command (``if __name__ == "__main__": sys.exit(main())``) without a Python
    and fairseq start per call. ``env`` replaces the environment for the call. Returns a
    CompletedProcess with the exit status and what the command printed."""
    import contextlib
    import importlib
    import io

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                contextlib.chdir(cwd or os.getcwd()):  # fmt: skip
            try:
                module = importlib.import_module(name)
                if not hasattr(module, "main"):  # a package run as python -m: its __main__
                    module = importlib.import_module(f"{name}.__main__")
                code = module.main([str(a) for a in args])
            except SystemExit as exit_:  # argparse's refusals and commands that exit
                code = exit_.code
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if isinstance(code, str):  # sys.exit("message"): Python prints it and exits 1
        err.write(code + "\n")
        code = 1
    return subprocess.CompletedProcess([name, *map(str, args)], code or 0, out.getvalue(), err.getvalue())


def generate_in_process(*args, cwd):
    """``fairseq-generate args`` as its console script's ``cli_main`` in this process: the
    same parsing and decoding without a Python and fairseq start per call (fairseq is
    imported here already). Returns what it printed (the hypotheses; its log goes to this
    process's logging). A test that needs the command in a fresh process uses ``run_cli``.

    The batches are read in this process (``--num-workers 0``; it changes no output): when
    generate drops its data loader here, torch's shutdown of the loader's forked worker waits
    out its whole 5-second poll interval before the worker exits (measured: 5.0 s per call),
    idle time that every in-process decode would add."""
    import contextlib
    import io

    from fairseq_cli import generate

    out = io.StringIO()
    saved = sys.argv
    sys.argv = ["fairseq-generate", *map(str, args), "--num-workers", "0"]
    try:
        with contextlib.redirect_stdout(out), contextlib.chdir(cwd):
            generate.cli_main()
    finally:
        sys.argv = saved
    return out.getvalue()


#: the line format of fairseq-train's log (its module sets it up with logging.basicConfig)
FAIRSEQ_LOG_FORMAT = ("%(asctime)s | %(levelname)s | %(name)s | %(message)s", "%Y-%m-%d %H:%M:%S")


def train_in_process(*args, cwd, check=True):
    """``fairseq-train args`` as its console script's ``cli_main`` in this process, for the
    one-process runs whose result a test reads: the same parsing, training and checkpoints
    without a Python, torch and fairseq start per run (about 6 CPU-seconds each). Returns a
    CompletedProcess: the exit status (1 with the traceback for an exception) and, as
    ``stdout``, what the command printed and logged, in fairseq's log format. The batches
    are read in this process (``--num-workers 0``, as for :func:`generate_in_process`). A
    test of the process itself (signals, exit, several workers) runs it with ``run_cli``."""
    import contextlib
    import io
    import traceback

    from fairseq_cli import train

    if "--user-dir" in map(str, args):  # fairseq skips a --user-dir already imported here
        from admin_fairseq import plugin

        plugin.load()  # what importing it as the plugin does
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(*FAIRSEQ_LOG_FORMAT))
    root = logging.getLogger()
    loggers = [root, logging.getLogger("fairseq")]  # this suite quiets fairseq's (above)
    levels, saved_argv, code = [logger.level for logger in loggers], sys.argv, 0
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.INFO)
    sys.argv = ["fairseq-train", *map(str, args), "--num-workers", "0"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), contextlib.chdir(cwd):
            try:
                train.cli_main()
            except SystemExit as exit_:  # argparse's refusals
                code = exit_.code if isinstance(exit_.code, int) else 1
            except Exception:  # noqa: BLE001  what the command would print before exiting 1
                out.write(traceback.format_exc())
                code = 1
    finally:
        sys.argv = saved_argv
        root.removeHandler(handler)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    result = subprocess.CompletedProcess(["fairseq-train", *map(str, args)], code, out.getvalue(), "")
    if check and code != 0:
        raise AssertionError(f"fairseq-train {' '.join(map(str, args))} exited {code}\n--- output (tail) ---\n"
                             f"{result.stdout[-6000:]}")  # fmt: skip
    return result


CLUSTER_TOOLS_INSTALL = "sudo bash scripts/install_cluster_tools.sh"


def require_cluster_tools(what, commands, root=True):
    """Skip ``what`` where a system command it starts, or root, is missing, naming both and
    the command that installs them; under CI=true (where .ci/run has installed them) fail
    instead, so that CI never skips a cluster test."""
    missing = [c for c in commands if shutil.which(c) is None]
    if root and os.geteuid() != 0:
        missing.append("root (network namespaces and Slurm daemons need it)")
    if not missing:
        return
    message = (f"{what} needs {', '.join(missing)}; install the tools with: {CLUSTER_TOOLS_INSTALL} "
               "(iproute2, slurm-wlm, munge), then run the tests as root")  # fmt: skip
    if os.environ.get("CI") == "true":
        pytest.fail(message + " [CI=true: the cluster tests must run here]")
    pytest.skip(message)


def free_port():
    """A TCP port on the loopback interface that is free right now (for gloo workers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dict_dir(tmp_path_factory):
    """A joined en/fr dictionary of 60 made-up words: enough to build models in memory."""
    path = tmp_path_factory.mktemp("dict")
    words = "".join(f"w{i} {1000 - i}\n" for i in range(60))
    for lang in ("en", "fr"):
        (path / f"dict.{lang}.txt").write_text(words)
    return path


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """The folder every test process of this run shares (tests/shared_runs.py)."""
    from shared_runs import shared_root

    return shared_root(tmp_path_factory)


@pytest.fixture(scope="session")
def bible(shared):
    """The README example's Bible slice (en-fr), made by the README's own prepare command:
    3,000 training verses from all books but Mark, 100 validation verses, the first 100
    verses of Mark as test set; joint sentencepiece 1k. Built once per test run, shared by
    every test process; tests only read it."""
    from shared_runs import once, readme_data, readme_prepare

    root = once(shared, "bible", readme_prepare)
    data = readme_data(root)
    counts = json.loads((data / "counts.json").read_text())["lines"]
    assert (counts["train.en"], counts["valid.en"], counts["test.fr"]) == (3000, 100, BIBLE_TEST_SIZE)
    return {"root": root, "raw": data, "bin": data / "bin"}


@pytest.fixture(scope="session")
def readme_run(shared, bible):
    """The folder where the README example's fairseq-train and fairseq-generate commands ran
    as written, on ``bible`` (tests/shared_runs.py): its checkpoints and ``example.log``."""
    from shared_runs import once, readme_run

    return once(shared, "readme-run", lambda folder: readme_run(folder, bible["raw"]))


@pytest.fixture(scope="session")
def bible_recipe_data(shared):
    """A Bible slice prepared by the recipes' prepare step (2,000 training pairs, the first
    60 verses of Mark as test set, joint sentencepiece 1k). Shared like ``bible``."""
    from admin_fairseq.recipes import prepare
    from shared_runs import once

    def make(root):
        record = prepare.prepare("bible-en-fr", root / "bible-en-fr", vocab_size=1000, train_size=2000,
                                 valid_size=100, test_size=60, log=lambda *_: None)  # fmt: skip
        assert record["lines"]["test.fr"] == 60

    return once(shared, "recipe-data", make) / "bible-en-fr"


@pytest.fixture(scope="session")
def trained(shared, bible):
    """``trained(name)``: the checkpoint of tests/shared_runs.py's model ``name``, trained
    once per test run on ``bible``. Tests only read it; one that changes it copies it first."""
    from shared_runs import trained_model

    return lambda name: trained_model(shared, bible, name)
