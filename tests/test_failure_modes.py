"""Bad input gets a non-zero exit and a message naming the problem and the fix.

Each case runs the real command and checks the exit code and the message: fairseq's commands
(``fairseq-train --user-dir``, ``fairseq-generate``) as subprocesses; the project's own commands
(the recipe steps, the CTranslate2 conversion) as the ``main(argv)`` their ``python -m`` runs,
in this process, which saves a Python and fairseq start per case. The "Failure modes" table of
docs/reliability.md lists the same cases by id with the same message text; tests/test_docs.py
keeps the two in step.
"""

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from conftest import REPO, USER_DIR, cli_path, run_module

from admin_fairseq.corpora import wmt

TINY = ["--arch", "transformer_admin_tiny", "--encoder-layers", "2", "--decoder-layers", "2",
        "--share-all-embeddings"]  # fmt: skip
TRAIN = ["--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt",
         "--warmup-updates", "10", "--max-tokens", "512", "--max-update", "3", "--cpu",
         "--disable-validation", "--num-workers", "0", "--no-progress-bar", "--seed", "1"]  # fmt: skip


@dataclass
class Case:
    id: str
    expect: str  # printed by the command; the docs table row quotes the same text
    run: object  # ctx -> CompletedProcess
    gpu_machine_differs: bool = False


def _proc(cmd, cwd=None):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=600)


def _train(ctx, *flags, save="scratch", cpu=True):
    train = TRAIN if cpu else [f for f in TRAIN if f != "--cpu"]
    return _proc([cli_path("fairseq-train"), ctx["bin"], "--user-dir", USER_DIR, *TINY, *train,
                  "--save-dir", ctx["tmp"] / save, *flags], cwd=ctx["tmp"])  # fmt: skip


def _module(name, *args):
    return run_module(name, *args)


def _bad_profile(ctx):
    path = ctx["tmp"] / "profile.json"
    path.write_text(json.dumps({"encoder": [1.0, 1.5, 2.0], "decoder": [1.0] * 6}))
    return _train(ctx, "--admin-init", "--admin-profile-from", path)


def _resume_into(ctx, source, *flags):
    """Copy a trained run's checkpoint_last.pt into a new folder and resume with ``flags``."""
    dest = ctx["tmp"] / f"resume-{source}-{len(list(ctx['tmp'].iterdir()))}"
    dest.mkdir()
    shutil.copy(ctx[source] / "checkpoint_last.pt", dest / "checkpoint_last.pt")
    return _train(ctx, *flags, "--max-update", "6", save=dest.name)


def _corrupt_resume(ctx):
    dest = ctx["tmp"] / "corrupt-run"
    dest.mkdir(exist_ok=True)
    data = (ctx["vector"] / "checkpoint_last.pt").read_bytes()
    (dest / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])
    return _train(ctx, "--admin-init", "--admin-as-parameter", "--max-update", "6", save=dest.name)


def _generate_without_user_dir(ctx):
    return _proc([cli_path("fairseq-generate"), ctx["bin"], "--path", ctx["vector"] / "checkpoint_last.pt",
                  "--gen-subset", "test", "--cpu", "--max-tokens", "2000"])  # fmt: skip


def _recipe_train(ctx, data, *extra):
    return _module("admin_fairseq.recipes.train", "--data", data, "--method", "admin", "--depth",
                   "2-2", "--batch", "1x1024", "--recipe", "regular", "--cpu", "--save-dir",
                   ctx["tmp"] / "recipe-run", *extra)  # fmt: skip


def _half_written(ctx):
    half = ctx["tmp"] / "half-data"
    if not half.exists():
        shutil.copytree(ctx["recipe_data"], half)
        shutil.rmtree(half / "bin")
    return _recipe_train(ctx, half)


def _misaligned_raw(ctx):
    """Extracted WMT'14 files in a raw folder, one pair with a missing target line."""
    raw = ctx["tmp"] / "raw-misaligned"
    raw.mkdir(exist_ok=True)
    for corpus in wmt.TASKS["wmt14-en-fr"].train:
        n_fr = 4 if corpus.name == "commoncrawl" else 5
        (raw / corpus.members["en"].removesuffix(".gz")).write_text("a b c\n" * 5)
        (raw / corpus.members["fr"].removesuffix(".gz")).write_text("a b c\n" * n_fr)
        for lang in ("en", "fr"):
            base = corpus.members[lang]
            if base.endswith(".gz"):  # giga-fren ships gzipped members
                import gzip

                (raw / base).write_bytes(gzip.compress((raw / base.removesuffix(".gz")).read_bytes()))
    return _module("admin_fairseq.recipes.prepare", "--corpus", "wmt14-en-fr", "--out",
                   ctx["tmp"] / "wmt-out", "--raw-dir", raw, "--offline")  # fmt: skip


def _corrupt_evaluate(ctx):
    run = ctx["tmp"] / "eval-corrupt"
    run.mkdir(exist_ok=True)
    data = (ctx["vector"] / "checkpoint_last.pt").read_bytes()
    (run / "checkpoint_last.pt").write_bytes(data[:3000])
    return _module("admin_fairseq.recipes.evaluate", "--run", run, "--data", ctx["recipe_data"])


def _ct2_without_sentencepiece(ctx):
    return _module("admin_fairseq.ct2", "--checkpoint", ctx["vector"] / "checkpoint_last.pt", "--out",
                   ctx["tmp"] / "ct2", "--spm", ctx["tmp"] / "no-such.model")  # fmt: skip


CASES = [
    Case("unknown-scale", "argument --admin-output-change-scale: invalid choice: 'O(log)' "
         "(choose from 'O(logn)', 'O(1)', 'O(n)', 'default')",
         lambda c: _train(c, "--admin-init", "--admin-output-change-scale", "O(log)")),
    Case("zero-layers", "--encoder-layers must be >= 1 with --admin-init; got 0",
         lambda c: _train(c, "--admin-init", "--encoder-layers", "0")),
    Case("admin-pre-ln", "--admin-init is defined for Post-LN Transformers only",
         lambda c: _train(c, "--admin-init", "--encoder-normalize-before")),
    Case("deepnet-pre-ln", "--deepnet is defined for Post-LN Transformers only",
         lambda c: _train(c, "--deepnet", "--decoder-normalize-before")),
    Case("admin-and-deepnet", "--deepnet and --admin-init are two different initialisations",
         lambda c: _train(c, "--admin-init", "--deepnet")),
    Case("flag-without-admin", "--admin-as-parameter has no effect without --admin-init",
         lambda c: _train(c, "--admin-as-parameter")),
    Case("profile-under-fp16", "--admin-profile cannot profile under --fp16/--bf16",
         lambda c: _train(c, "--admin-init", "--admin-profile", "--fp16")),
    Case("fp16-without-gpu", "--fp16 need(s) a CUDA GPU, and torch sees none on this machine",
         lambda c: _train(c, "--admin-init", "--fp16", cpu=False), gpu_machine_differs=True),
    Case("fp16-with-cpu", "--fp16 with --cpu: fairseq 0.12's half-precision training needs CUDA",
         lambda c: _train(c, "--admin-init", "--fp16"), gpu_machine_differs=True),
    Case("profile-wrong-count", "has 3 encoder omegas, the model has 4 encoder sub-layers", _bad_profile),
    Case("omega-vector-wrong-size", "the checkpoint's omega has size 64 but this model's 32",
         lambda c: _resume_into(c, "vector", "--admin-init", "--admin-as-parameter",
                                "--encoder-embed-dim", "32", "--decoder-embed-dim", "32")),
    Case("omega-scalar-vs-vector", "the checkpoint has one scalar omega per sub-layer (trained "
         "without --admin-as-parameter); drop --admin-as-parameter",
         lambda c: _resume_into(c, "scalar", "--admin-init", "--admin-as-parameter")),
    Case("admin-checkpoint-without-admin", "the checkpoint holds Admin/DeepNet omegas but this "
         "model has none", lambda c: _resume_into(c, "scalar")),
    Case("corrupt-checkpoint-resume", "the file is truncated or corrupt", _corrupt_resume),
    Case("corrupt-checkpoint-evaluate", "cannot be read", _corrupt_evaluate),
    Case("generate-without-user-dir", "Weights only load failed", _generate_without_user_dir),
    Case("recipe-data-missing", "does not exist; prepare it first",
         lambda c: _recipe_train(c, c["tmp"] / "no-such-data")),
    Case("recipe-data-half-written", "is incomplete (missing bin/preprocess.done", _half_written),
    Case("line-counts-differ", "commoncrawl: commoncrawl.fr-en.fr has fewer lines than "
         "commoncrawl.fr-en.en", _misaligned_raw),
    Case("offline-files-missing", "lacks 4 file(s): de-en.tgz (from http://www.statmt.org/europarl/v7/de-en.tgz)",
         lambda c: _module("admin_fairseq.recipes.prepare", "--corpus", "wmt17-en-de", "--out",
                           c["tmp"] / "o", "--raw-dir", c["tmp"] / "empty-raw", "--offline")),
    Case("batch-unreachable", "--batch 8x4096 = 32,768 tokens per update cannot be reached "
         "exactly by 3 worker(s)",
         lambda c: _module("admin_fairseq.recipes.train", "--data", "d", "--method", "admin",
                           "--depth", "6-6", "--batch", "8x4096", "--gpus", "3", "--dry-run")),
    Case("unknown-method", "unknown --method 'admn'; choose from",
         lambda c: _module("admin_fairseq.recipes.train", "--data", "d", "--method", "admn",
                           "--depth", "6-6", "--batch", "8x4096", "--gpus", "8", "--dry-run")),
    Case("ct2-no-sentencepiece", "no-such.model not found; pass --spm", _ct2_without_sentencepiece),
]  # fmt: skip


@pytest.fixture(scope="module")
def ctx(bible, bible_recipe_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("failure-modes")
    context = {"bin": bible["bin"], "tmp": tmp, "recipe_data": bible_recipe_data}
    for name, flags in (("scalar", ["--admin-init"]), ("vector", ["--admin-init", "--admin-as-parameter"])):
        result = _train(context, *flags, save=name)
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        context[name] = tmp / name
    return context


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_exits_non_zero_with_a_clear_message(case, ctx):
    if case.gpu_machine_differs and torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so the input is not bad here")
    result = case.run(ctx)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert case.expect in output, output[-3000:]


class _RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_by_every_command_and_never_runs(ctx, capsys):
    """A checkpoint whose pickle calls os.system, given to every command that opens
    checkpoints: each refuses it with a message naming the file and the class, exits non-zero,
    and the code never runs (its marker file is never created). The project's own commands
    run in this process (the payload would run here); fairseq's run as subprocesses."""
    import runpy

    from admin_fairseq import ct2, translate
    from admin_fairseq.recipes import evaluate

    tmp = ctx["tmp"] / "crafted"
    tmp.mkdir()
    marker = tmp / "CODE-RAN"
    evil = tmp / "shared.pt"
    torch.save({"cfg": {"model": _RunsCode(marker), "task": {}}, "model": {"w": torch.zeros(2)},
                "optimizer_history": []}, evil)  # fmt: skip
    run = tmp / "run"
    run.mkdir()
    shutil.copy(evil, run / "checkpoint1.pt")
    resume = tmp / "resume"
    resume.mkdir()
    shutil.copy(evil, resume / "checkpoint_last.pt")
    (tmp / "in.txt").write_text("hello\n")
    refused = re.compile(r"checkpoint \S*(shared|checkpoint1|checkpoint_last)\.pt holds posix\.system, which "
                         r"is not among the classes fairseq checkpoints hold .* it was refused unread")  # fmt: skip

    def in_process(main, argv):
        sys.argv = [main.__module__, *map(str, argv)]
        try:
            code = main(list(map(str, argv)))
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    export_script = runpy.run_path(str(REPO / "scripts" / "export_transformer.py"))["main"]
    ours = {
        "ct2": (ct2.main, ["--checkpoint", evil, "--out", tmp / "ct2", "--data", ctx["bin"]]),
        "translate": (translate.main, ["--model", evil, "--input", tmp / "in.txt"]),
        "export": (export_script, ["--input", evil, "--output", tmp / "plain.pt"]),
        "evaluate": (evaluate.main, ["--run", run, "--data", ctx["recipe_data"], "--avg-last", "1"]),
    }
    for name, (main, argv) in ours.items():
        code, err = in_process(main, argv)
        assert code == 2 and refused.search(err), (name, code, err[-2000:])
    theirs = {
        "--admin-profile-from": _train(ctx, "--admin-init", "--admin-profile-from", evil),
        "resume": _train(ctx, "--admin-init", save=resume.relative_to(ctx["tmp"])),
        "fairseq-generate": _proc([cli_path("fairseq-generate"), ctx["bin"], "--user-dir", USER_DIR, "--path", evil,
                                   "--gen-subset", "test", "--cpu", "--max-tokens", "2000"]),  # fmt: skip
    }
    for name, result in theirs.items():
        assert result.returncode != 0 and refused.search(result.stderr), (name, result.stderr[-2000:])
    assert not marker.exists(), "a command ran the checkpoint's code"
    assert not (tmp / "ct2").exists() and not (tmp / "plain.pt").exists()
