"""Nothing the user owns is lost, and no failure passes as a success.

:data:`CASES` is a table of misuse, each run through the real command (its ``main(argv)``,
what ``python -m`` runs, in this process): a careless ``--out``, a ``--force`` on the
wrong folder, numbers that cannot work, a run folder reused with other settings. Each case
asserts the exit status, one ``error:`` line that says what is wrong (no traceback), and
that every file the user had before is byte for byte the same after (a sha256 of each).
docs/reliability.md lists the same cases by id; tests/test_docs.py keeps the two in step.
"""

import contextlib
import hashlib
import io
import json
import os
import runpy
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO

from admin_fairseq import atomic, checkpoints, ct2, main_job, outputs, translate
from admin_fairseq.monitor import __main__ as monitor_command
from admin_fairseq.recipes import compare, evaluate, plan, prepare, train


def _corpus(folder, name, pairs, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    words = ["alpha", "beta", "gamma", "delta", "kappa", "omega", "sigma", "theta"]
    src = [" ".join(words[(i * 3 + k + seed) % 8] for k in range(3 + i % 5)) for i in range(pairs)]
    (folder / f"{name}.de").write_text("".join(line + "\n" for line in src))
    (folder / f"{name}.en").write_text("".join(line.upper() + "\n" for line in src))


@pytest.fixture
def home(tmp_path):
    """A user's folder: their corpus, notes, a thesis, a checkpoint of theirs."""
    _corpus(tmp_path / "corpus", "train", 300)
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("\\chapter{One}\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.de").write_text("mine, not prepare's\n")
    (tmp_path / "model.pt").write_bytes(b"the user's checkpoint bytes")
    (tmp_path / "outputs" / "old").mkdir(parents=True)
    (tmp_path / "outputs" / "old" / "main_job.json").write_text(json.dumps({"settings": {"lr": "1e-3"}}))
    return tmp_path


def _run_record(home, seed=1, data="data"):
    """The record the train step plans for a small run in ``{home}/run`` (not written)."""
    settings = train.settings(["--data", str(home / data), "--method", "admin", "--depth", "2-2",
                               "--batch", "1x1024", "--recipe", "regular", "--size", "cpu", "--cpu",
                               "--updates", "10", "--save-dir", str(home / "run"), "--seed", str(seed)])  # fmt: skip
    return plan.build(settings)[1]


@dataclass
class Case:
    id: str
    argv: tuple  # (command name, main, argv with {home})
    expect: str  # in the one error line
    code: int = 2


def _export_main(argv):
    return runpy.run_path(str(REPO / "scripts" / "export_transformer.py"))["main"](argv)


COMMANDS = {
    "prepare": prepare.main, "main_job": main_job.main, "train": train.main, "evaluate": evaluate.main,
    "compare": compare.main, "ct2": ct2.main, "export": _export_main, "translate": translate.main,
    "monitor": monitor_command.main,
}  # fmt: skip

TEXT = ["--corpus", "text", "--src", "de", "--tgt", "en", "--train", "{home}/corpus/train"]
CASES = [
    Case("prepare-out-is-the-corpus", ("prepare", *TEXT, "--out", "{home}/corpus"),
         "output {home}/corpus/train.de would overwrite input {home}/corpus/train.de"),
    Case("prepare-out-holds-a-users-file", ("prepare", *TEXT, "--out", "{home}/mine"),
         "{home}/mine/train.de already exists and was not written by prepare"),
    Case("prepare-same-file-twice", ("prepare", *TEXT, "--valid", "{home}/corpus/train", "--out", "{home}/d"),
         "train, valid and test must be different files"),
    Case("prepare-vocab-zero", ("prepare", *TEXT, "--vocab-size", "0", "--out", "{home}/d"),
         "argument --vocab-size: must be at least 1; got 0"),
    Case("main-job-method-twice", ("main_job", "--methods", "admin,admin", "--out", "{home}/o"),
         "--methods names admin more than once"),
    Case("main-job-lr-nan", ("main_job", "--lr", "nan", "--out", "{home}/o"),
         "argument --lr: must be a finite number; got 'nan'"),
    Case("main-job-lr-negative", ("main_job", "--lr", "-1", "--out", "{home}/o"),
         "argument --lr: must be more than 0; got -1"),
    Case("main-job-warmup-negative", ("main_job", "--warmup", "-1", "--out", "{home}/o"),
         "argument --warmup: must be at least 0; got -1"),
    Case("main-job-valid-every-zero", ("main_job", "--valid-every", "0", "--out", "{home}/o"),
         "argument --valid-every: must be at least 1; got 0"),
    Case("main-job-max-tokens-zero", ("main_job", "--max-tokens", "0", "--out", "{home}/o"),
         "argument --max-tokens: must be at least 1; got 0"),
    Case("main-job-beam-zero", ("main_job", "--beam", "0", "--out", "{home}/o"),
         "argument --beam: must be at least 1; got 0"),
    Case("main-job-seed-negative", ("main_job", "--seed", "-1", "--out", "{home}/o"),
         "argument --seed: must be at least 0; got -1"),
    Case("main-job-other-settings", ("main_job", "--out", "{home}/outputs/old"),
         "{home}/outputs/old holds a main job with other settings"),
    Case("main-job-out-holds-a-users-file", ("main_job", "--out", "{home}/thesis2"),
         "{home}/thesis2/comparison.md already exists and was not written by main_job"),
    Case("train-gpus-zero", ("train", "--data", "{home}/d", "--method", "admin", "--depth", "6-6",
                             "--batch", "1x4096", "--gpus", "0"), "argument --gpus: must be at least 1; got 0"),
    Case("train-update-freq-zero", ("train", "--data", "{home}/d", "--method", "admin", "--depth", "6-6",
                                    "--batch", "1x4096", "--cpu", "--", "--update-freq", "0"),
         "fairseq flag --update-freq 0: must be at least 1; got 0"),
    Case("train-max-tokens-zero", ("train", "--data", "{home}/d", "--method", "admin", "--depth", "6-6",
                                   "--batch", "1x4096", "--cpu", "--", "--max-tokens=0"),
         "fairseq flag --max-tokens 0: must be at least 1; got 0"),
    Case("train-lr-nan", ("train", "--data", "{home}/d", "--method", "admin", "--depth", "6-6",
                          "--batch", "1x4096", "--cpu", "--", "--lr", "nan"),
         "fairseq flag --lr nan: must be a finite number; got 'nan'"),
    Case("train-folder-of-another-run", ("train", "--data", "{home}/data", "--method", "admin", "--depth", "2-2",
                                         "--batch", "1x1024", "--recipe", "regular", "--size", "cpu", "--cpu",
                                         "--updates", "10", "--save-dir", "{home}/run", "--seed", "7"),
         "{home}/run holds a run with other settings (--seed: 1 before, 7 now)"),
    Case("evaluate-beam-zero", ("evaluate", "--run", "{home}/run", "--beam", "0"),
         "argument --beam: must be at least 1; got 0"),
    Case("compare-bad-record", ("compare", "{home}/thesis", "--out", "{home}/cmp"),
         "{home}/thesis has no run.json; is it a folder made by the training step?"),
    Case("compare-out-holds-a-users-file", ("compare", "{home}/thesis", "--out", "{home}/thesis2"),
         "{home}/thesis2/comparison.md already exists and was not written by compare"),
    Case("ct2-force-on-a-users-folder", ("ct2", "--checkpoint", "{home}/model.pt", "--out", "{home}/thesis", "--force"),
         "--force replaces only a folder that ct2 wrote"),
    Case("ct2-out-is-a-file", ("ct2", "--checkpoint", "{home}/model.pt", "--out", "{home}/notes.txt"),
         "--out {home}/notes.txt is a file, not a folder"),
    Case("export-over-its-input", ("export", "--input", "{home}/model.pt", "--output", "{home}/model.pt"),
         "output {home}/model.pt would overwrite input checkpoint {home}/model.pt"),
    Case("export-over-a-users-file", ("export", "--input", "{home}/model.pt", "--output", "{home}/notes.txt"),
         "output {home}/notes.txt exists and was not written by the export"),
    Case("translate-max-len-b-negative", ("translate", "--model", "{home}/model.pt", "--max-len-b", "-1"),
         "argument --max-len-b: must be at least 0; got -1"),
    Case("translate-compute-type-unknown", ("translate", "--model", "{home}/model.pt", "--compute-type", "bogus"),
         "argument --compute-type: invalid choice: 'bogus'"),
    Case("monitor-factor-zero", ("monitor", "{home}/run", "--factor", "0"),
         "argument --factor: must be more than 1; got 0"),
    Case("monitor-factor-nan", ("monitor", "{home}/run", "--factor", "nan"),
         "argument --factor: must be a finite number; got 'nan'"),
    Case("monitor-not-a-file", ("monitor", "/dev/zero"), "/dev/zero is not a regular file"),
]


def _snapshot(root):
    """sha256 of every file under ``root`` (a folder's listing included)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


def _call(name, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = COMMANDS[name](argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_misuse_is_refused_with_one_line_and_the_users_files_unchanged(case, home):
    (home / "thesis2").mkdir()
    (home / "thesis2" / "comparison.md").write_text("my own table\n")
    (home / "data").mkdir()
    _run_record(home, seed=1).write()  # a run of the train step in {home}/run
    before = _snapshot(home)
    name, *argv = [part.replace("{home}", str(home)) for part in case.argv]
    code, err = _call(name, argv)
    lines = [line for line in err.splitlines() if line.strip()]
    expect = case.expect.replace("{home}", str(home))
    assert code == case.code, (code, err[-2000:])
    assert "Traceback" not in err and len([line for line in lines if "error:" in line]) == 1, err[-2000:]
    assert any(expect in line for line in lines), (expect, err[-2000:])
    after = _snapshot(home)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the user's changed
    made = sorted(set(after) - set(before))
    assert not [m for m in made if not m.endswith(outputs.MANIFEST) and "/" in m and after[m] != "dir"], made


def test_prepare_redone_with_other_settings_keeps_the_users_files_and_never_touches_the_corpus(home):
    """The issue's first case, run as a user would: the corpus given as --train stays as it
    was (1,500 lines are not cut down run after run), a second run with another
    --vocab-size redoes only prepare's files, and the user's notes in --out stay."""
    _corpus(home / "big", "train", 1500, seed=3)
    before = _snapshot(home / "big")
    out = home / "prepared"
    argv = ["--corpus", "text", "--src", "de", "--tgt", "en", "--train", str(home / "big" / "train"), "--out", str(out)]
    code, err = _call("prepare", [*argv, "--vocab-size", "40"])
    assert code == 0, err
    (out / "notes.txt").write_text("mine\n")
    (out / "extra").mkdir()
    assert _call("prepare", [*argv, "--vocab-size", "35"])[0] == 0
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "extra").is_dir()
    assert json.loads((out / "prepare.json").read_text())["vocab_size"] == 35
    assert _snapshot(home / "big") == before
    assert len((home / "big" / "train.de").read_text().splitlines()) == 1500


def test_files_follow_the_umask_and_a_symlink_is_written_through(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic.write_json(tmp_path / "counts.json", {"a": 1})
        assert (tmp_path / "counts.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        atomic.write_text(tmp_path / "shared.txt", "x\n")
        assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(previous)
    target = tmp_path / "checkpoint7.pt"
    target.write_text("old")
    (tmp_path / "checkpoint_best.pt").symlink_to(target.name)
    atomic.write_text(tmp_path / "checkpoint_best.pt", "new")
    assert (tmp_path / "checkpoint_best.pt").is_symlink() and target.read_text() == "new"


def test_ct2_force_replaces_its_own_folder_only_when_nothing_else_was_put_there(tmp_path):
    folder = tmp_path / "model-ct2"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"x")
    outputs.Folder(folder, "ct2").adopt(["model.bin"])
    ct2._check_out(folder, force=True)  # its own folder: replaceable
    (folder / "thesis.tex").write_text("mine")
    with pytest.raises(ct2.DeployError, match="holds thesis.tex, which ct2 did not write"):
        ct2._check_out(folder, force=True)


def test_the_main_job_fails_with_the_runs_name_when_a_run_fails(bible_recipe_data, tmp_path, monkeypatch):
    """A run whose training fails: the table is written, the command exits 1 naming the
    run and its log, and the failed run's row shows no score of an earlier run."""
    def failing_run(commands, record, **_):
        Path(record.save_dir).mkdir(parents=True, exist_ok=True)
        (Path(record.save_dir) / "train.log").write_text("Traceback: it failed\n")
        record.replace(status="failed (exit 1)", exit_code=1).write()
        return 1

    monkeypatch.setattr(train, "run", failing_run)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main_job.main(["--data", str(bible_recipe_data), "--methods", "admin", "--depth", "2-2",
                              "--updates", "5", "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 1, err.getvalue()
    assert f"1 of 1 run(s) failed: admin (training exited 1; see {tmp_path / 'o' / 'runs' / 'admin' / 'train.log'})" in err.getvalue()
    assert "| failed |" in (tmp_path / "o" / "comparison.md").read_text()


def test_a_score_of_an_earlier_run_in_the_folder_is_not_shown(tmp_path):
    """eval/test.json records which run it scored (the run's start): after a new run in the
    same folder, the earlier run's score is not shown; the same run's is."""
    record = _run_record(tmp_path, data="d")
    (tmp_path / "run" / "eval").mkdir(parents=True)
    scores = {"bleu": 31.0, "chrf": 50.0, "tokenized_bleu": 32.0, "bleu_signature": "x",
              "run_started": "2026-01-01 10:00:00"}  # fmt: skip
    (tmp_path / "run" / "eval" / "test.json").write_text(json.dumps(scores))
    record.replace(status="finished", exit_code=0, started="2026-01-01 10:00:00").write()
    assert compare.summarize(tmp_path / "run")[0]["bleu"] == 31.0
    record.replace(status="finished", exit_code=0, started="2026-01-02 09:00:00").write()
    assert compare.summarize(tmp_path / "run")[0]["bleu"] is None


def _fairseq_written(tmp_path, what):
    """A checkpoint fairseq 0.12 itself writes (checkpoint_utils.torch_persistent_save) with
    ``what``: the metrics of a run with --eval-bleu (fairseq's own meters, BLEU counts as
    numpy arrays), a cfg as omegaconf DictConfig, a task state holding a Dictionary."""
    import numpy as np
    from fairseq import checkpoint_utils, metrics, options
    from fairseq.data import Dictionary
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(tmp_path), "--arch", "transformer", "--task",
                                                "translation", "-s", "de", "-t", "en"])  # fmt: skip
    cfg = convert_namespace_to_omegaconf(args)

    history = [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                "lr_scheduler_state": {"best": 3.2}, "num_updates": 40}]  # fmt: skip
    state = {"model": {}, "args": None, "optimizer_history": history, "extra_state": {"train_iterator": {"epoch": 1}}}
    if what == "eval-bleu":
        with metrics.aggregate("valid") as agg:
            metrics.log_scalar("_bleu_counts", np.array([10, 6, 3, 1]))
            metrics.log_scalar("_bleu_totals", np.array([12, 11, 10, 9]))
            metrics.log_scalar("_bleu_sys_len", np.int64(12))
        state["extra_state"]["metrics"] = {"valid": agg.state_dict()}
    elif what == "dictionary":
        dictionary = Dictionary()
        dictionary.add_symbol("hallo")
        state["task_state"] = {"target_dictionary": dictionary}
    # fairseq 0.12 saves its settings as plain containers; late 2020 to early 2021, as DictConfig
    state["cfg"] = cfg if what == "dictconfig" else OmegaConf.to_container(cfg)
    path = tmp_path / f"{what}.pt"
    checkpoint_utils.torch_persistent_save(state, str(path))
    return path


@pytest.mark.parametrize("what", ["eval-bleu", "dictconfig", "dictionary"])
def test_checkpoints_fairseq_writes_load_with_the_plugin(tmp_path, what):
    from admin_fairseq import plugin

    plugin.load()
    from fairseq import checkpoint_utils

    path = _fairseq_written(tmp_path, what)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))  # fairseq's loader, guarded
    if what == "eval-bleu":
        meters = {name: meter for _, name, _, meter in state["extra_state"]["metrics"]["valid"]}
        assert list(meters["_bleu_counts"]["val"]) == [10, 6, 3, 1]
    elif what == "dictconfig":
        assert state["cfg"]["model"].arch == "transformer" and type(state["cfg"]).__name__ == "DictConfig"
    else:
        assert state["task_state"]["target_dictionary"].index("hallo") == 4
    with pytest.raises(FileNotFoundError):
        checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "missing.pt"))


def test_the_guard_loads_the_bytes_it_checked(tmp_path, monkeypatch):
    """A file replaced after the check is not what fairseq loads: the state comes from the
    one read of the file."""
    from admin_fairseq import plugin

    plugin.load()
    from fairseq import checkpoint_utils

    path = _fairseq_written(tmp_path, "dictionary")
    real_read = checkpoints.read

    def read_then_swap(p, *args, **kwargs):
        state = real_read(p, *args, **kwargs)
        Path(p).write_bytes(b"swapped after the check")
        return state

    monkeypatch.setattr(checkpoints, "read", read_then_swap)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert state["task_state"]["target_dictionary"].index("hallo") == 4


def test_a_corpus_loses_nul_and_control_characters_and_says_how_many(tmp_path):
    from admin_fairseq.corpora.common import write_lines

    said = []
    write_lines(tmp_path / "train.de", ["a\x00b", "plain", "esc\x1b[0m", "bell\x07"], log=said.append)
    assert (tmp_path / "train.de").read_text().splitlines() == ["ab", "plain", "esc[0m", "bell"]
    assert any("3 line(s) held a control character" in line for line in said)


def test_ctrl_c_in_prepare_ends_with_one_line_and_exit_130(tmp_path):
    _corpus(tmp_path / "c", "train", 40000)
    cmd = [sys.executable, "-m", "admin_fairseq.recipes.prepare", "--corpus", "text", "--src", "de", "--tgt",
           "en", "--train", str(tmp_path / "c" / "train"), "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # interrupt once it has started its work
        if "[1/3]" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("prepare: interrupted")
    assert not (tmp_path / "out" / "counts.json").exists()  # not marked complete
    assert not list((tmp_path / "out").glob("**/.*.tmp"))  # no temporary file left


class _FakeModel:
    """A stand-in model for the translate command: upper-cases each sentence; Ctrl-C arrives
    while it translates the batch holding ``interrupt_at``."""

    describe = "fake"

    def __init__(self, interrupt_at=None):
        self.interrupt_at = interrupt_at
        self.pieces = self

    def encode(self, line):
        return line.split()

    def decode(self, pieces):
        return " ".join(pieces).upper()

    def translate_batches(self, batches):
        for batch in batches:
            if any(self.interrupt_at in p for p in batch):
                raise KeyboardInterrupt
            yield batch


def test_interrupted_translate_keeps_what_it_finished_in_input_order(tmp_path, monkeypatch, capsys):
    lines = [f"sentence {k} " + "x " * (k % 7) for k in range(100)]
    (tmp_path / "in.txt").write_text("".join(line + "\n" for line in lines))
    monkeypatch.setattr(translate, "load_model", lambda args: _FakeModel(interrupt_at="70"))
    code = translate.main(["--model", str(tmp_path), "--input", str(tmp_path / "in.txt"), "--batch-size", "2",
                           "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    window = 2 * translate.WINDOW_BATCHES
    assert code == 130 and err.strip().startswith("translate: interrupted; the first 64 translations")
    assert out.splitlines() == [line.strip().upper() for line in lines[:64]] and 64 == 2 * window


@pytest.mark.slow
def test_ctrl_c_in_the_train_step_ends_with_one_line_exit_130_and_the_run_recorded(bible_recipe_data, tmp_path):
    """Ctrl-C as a terminal sends it: to the whole process group (the train step and
    fairseq-train). fairseq's traceback goes to train.log only; run.json says interrupted."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(bible_recipe_data), "--method",
           "admin", "--depth", "2-2", "--batch", "1x1024", "--recipe", "regular", "--size", "cpu", "--cpu",
           "--updates", "100000", "--save-dir", str(run), "--log-interval", "1"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    for line in proc.stdout:  # interrupt once it trains
        if '"num_updates": "3"' in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    said = [line for line in err.splitlines() if line.startswith("train:")]
    assert said == [f"train: interrupted; the checkpoints in {run} are kept and the same command resumes "
                    "from the last one"] and err.strip().splitlines()[-1] == said[0]  # fmt: skip
    assert "Traceback" not in out and "Traceback" not in err
    assert json.loads((run / "run.json").read_text())["status"].startswith("interrupted")


def test_compare_writes_its_table_and_exits_1_naming_a_failed_run(tmp_path):
    record = _run_record(tmp_path, data="d")
    record.replace(status="failed (exit 1)", exit_code=1).write()
    (tmp_path / "run" / "train.log").write_text("Traceback (most recent call last):\n")
    code, err = _call("compare", [str(tmp_path / "run"), "--out", str(tmp_path / "cmp")])
    assert code == 1 and f"compare: error: 1 run(s) failed: {tmp_path / 'run'} (see {tmp_path / 'run' / 'train.log'})" in err
    assert "| failed |" in (tmp_path / "cmp" / "comparison.md").read_text()
