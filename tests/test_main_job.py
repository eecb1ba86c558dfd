"""The main job end to end, in a smaller setting of its quick mode: real Bible data in, a
BLEU table, a CSV and a loss plot out, with every BLEU recomputed from the translations."""

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from admin_fairseq import fairseq_log
from admin_fairseq.evaluation import score

from conftest import REPO, run_module


@pytest.mark.slow
def test_main_job_small_setting_end_to_end(tmp_path):
    out = tmp_path / "outputs" / "main"  # the default --out, seen from tmp_path
    cmd = [sys.executable, "-m", "admin_fairseq.main_job", "--quick", "--out", str(out),
           "--methods", "post-ln,admin", "--depth", "2-2", "--updates", "30", "--warmup", "10",
           "--valid-every", "15", "--train-size", "2000", "--valid-size", "100",
           "--test-size", "30", "--vocab-size", "1000"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    log = result.stdout
    if (os.cpu_count() or 1) >= 2:  # one run per core, at most one per method
        assert re.search(r"\[main\] 2 runs side by side, \d+ thread\(s\) each \(--jobs\)", log)
    assert "[run 2 of 2: admin 2-2] update 30/30: train loss" in log
    assert "[run 1 of 2: post-ln 2-2] update 15: valid loss" in log
    assert "| post-ln | 2-2 | 1x2048 | 30 |" in log  # the table is printed ...
    assert (out / "comparison.md").read_text() in log  # ... and written
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["method"] for r in rows] == ["post-ln", "admin"]
    references = (out / "data" / "test.fr").read_text().splitlines()
    assert len(references) == 30
    for row in rows:
        hyps = (out / "runs" / row["method"] / "eval" / "hypotheses-test.fr").read_text().splitlines()
        assert len(hyps) == 30
        assert math.isfinite(float(row["bleu"]))
        assert float(row["bleu"]) == pytest.approx(score(hyps, references)["bleu"])
        assert float(row["chrf"]) == pytest.approx(score(hyps, references)["chrf"])
        events = out / "runs" / row["method"] / "tensorboard"  # TensorBoard logs by default
        assert list((events / "train_inner").glob("events.out.tfevents.*"))
        assert list((events / "valid").glob("events.out.tfevents.*"))
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    # every run recorded the stability monitor (every 10 updates), and the picture is drawn
    assert (out / "stability.png").read_bytes()[:4] == b"\x89PNG" and f"{out / 'stability.png'}" in log
    for row in rows:
        train_log = (out / "runs" / row["method"] / "train.log").read_text()
        monitored = [int(s["num_updates"]) for _, s in fairseq_log.records(train_log.splitlines(), "train_inner")
                     if "share/decoder.1.ffn" in s]  # fmt: skip
        assert monitored == [10, 20, 30], row["method"]
    record = json.loads((out / "main_job.json").read_text())
    assert record["settings"]["updates"] == 30 and record["seconds"]["total"] > 0
    assert record["settings"]["jobs"] == min(2, os.cpu_count() or 1)

    # the same command again keeps the finished runs and reproduces the table
    table = (out / "comparison.md").read_text()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[main] [run 2 of 2: admin 2-2] already trained with these settings; kept" in again.stdout
    assert "already evaluated; kept" in again.stdout
    assert (out / "comparison.md").read_text() == table

    # the README's translation commands, as written, on this main job's Admin model
    section = (REPO / "README.md").read_text().split("## Translate with a trained model", 1)[1].split("\n## ")[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    written = re.findall(r"> (\S+)\s*$", block, flags=re.M)[-1]  # the translations' file
    translations = (tmp_path / written).read_text(encoding="utf-8").splitlines()
    assert len(translations) == len(references) and all(translations)
    assert re.search(r"\[translate\] 30 lines with CTranslate2 .* translated in [\d.]+ s", result.stderr)


def test_main_job_refuses_bad_options(tmp_path):
    for args, message in ((["--methods", "admin,postln"], "unknown method(s) ['postln']"),
                          (["--pair", "en-es"], "--pair must be en-fr or en-de"),
                          (["--width", "100"], "--width must be a multiple of 32"),
                          (["--jobs", "0"], "argument --jobs: must be at least 1; got 0"),
                          (["--jobs", "2", "--gpus", "1"], "--jobs applies to CPU runs")):  # fmt: skip
        result = run_module("admin_fairseq.main_job", "--out", tmp_path / "x", *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.slow
def test_main_job_on_a_users_own_corpus(bible_recipe_data, tmp_path):
    """--corpus text prepares the user's plain files and runs the comparison on them; --data
    then runs it again on the folder that preparation made."""
    corpus = tmp_path / "mine"
    corpus.mkdir()
    for lang in ("en", "fr"):  # a user's files: not the Bible layout, not in the repository
        (corpus / f"verses.{lang}").write_text((bible_recipe_data / f"train.{lang}").read_text())
    small = ["--methods", "post-ln,admin", "--depth", "2-2", "--updates", "20", "--warmup", "10",
             "--valid-every", "10", "--beam", "2"]  # fmt: skip
    out = tmp_path / "text"
    result = subprocess.run(
        [sys.executable, "-m", "admin_fairseq.main_job", "--out", str(out), "--corpus", "text",
         "--src", "en", "--tgt", "fr", "--train", str(corpus / "verses"), "--vocab-size", "600", *small],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert "[main] step 1/3: preparing your corpus" in result.stdout
    assert "test: 100 training pairs held out at random" in result.stdout
    assert "[run 2 of 2: admin 2-2] update 20/20: train loss" in result.stdout
    references = (out / "data" / "test.fr").read_text().splitlines()
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert [r["method"] for r in rows] == ["post-ln", "admin"]
    for row in rows:
        hyps = (out / "runs" / row["method"] / "eval" / "hypotheses-test.fr").read_text().splitlines()
        assert len(hyps) == len(references) == 100
        assert float(row["bleu"]) == pytest.approx(score(hyps, references)["bleu"])

    again = tmp_path / "data-run"
    result = subprocess.run(
        [sys.executable, "-m", "admin_fairseq.main_job", "--out", str(again), "--data", str(out / "data"),
         *small[:1], "admin", *small[2:]],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert f"the prepared corpus in {out / 'data'} (en-fr)" in result.stdout
    assert not (again / "data").exists()  # the folder is used where it is
    assert [r["method"] for r in csv.DictReader(open(again / "comparison.csv"))] == ["admin"]


def test_main_job_refuses_options_that_do_not_fit_the_corpus(tmp_path):
    for args, message in (
        (["--data", str(tmp_path / "nowhere")], "data folder"),
        (["--data", "d", "--corpus", "text"], "--data and --corpus exclude each other"),
        (["--data", "d", "--test-size", "5"], "--test-size applies to the Bible only"),
        (["--src", "en"], "--src needs --corpus text"),
        (["--corpus", "text", "--src", "en", "--tgt", "fr"], "--corpus text needs --train PREFIX"),
        (["--corpus", "text", "--src", "en", "--tgt", "fr", "--train", str(tmp_path / "nowhere" / "verses")],
         f"neither {tmp_path / 'nowhere' / 'verses.en'} nor {tmp_path / 'nowhere' / 'verses.en.gz'} exists"),
        (["--corpus", "text", "--src", "EN", "--tgt", "fr", "--train", "x"], "--src 'EN' is not a language code"),
        (["--pair", "en-de", "--corpus", "text"], "--pair applies"),
    ):  # fmt: skip
        result = run_module("admin_fairseq.main_job", "--out", tmp_path / "x", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert not (tmp_path / "x").exists()  # refused before anything is written


def test_a_run_that_fails_before_writing_anything_leaves_no_folder(tmp_path, monkeypatch):
    """A failure after the checks (here: the preparation itself) removes the output folder
    the run created, as long as nothing was written into it; a folder that was there stays."""
    from admin_fairseq import main_job
    from admin_fairseq.recipes import RecipeError, prepare

    def fails(*args, **kwargs):
        raise RecipeError("the download failed")

    monkeypatch.setattr(prepare, "prepare", fails)
    settings = main_job.settings_from(main_job.parse_args(["--out", str(tmp_path / "new"), "--quick"]))
    with pytest.raises(RecipeError, match="the download failed"):
        main_job.run_main_job(settings, tmp_path / "new", log=lambda *_: None)
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    with pytest.raises(RecipeError):
        main_job.run_main_job(settings, tmp_path / "old", log=lambda *_: None)
    assert (tmp_path / "old").is_dir()


def test_the_plot_title_names_the_corpus_as_the_user_would(bible_recipe_data, tmp_path):
    from admin_fairseq.main_job import corpus_name

    renamed = tmp_path / "outputs-data"
    renamed.mkdir()
    (renamed / "prepare.json").write_bytes((bible_recipe_data / "prepare.json").read_bytes())
    assert corpus_name(renamed) == "bible-en-fr"  # not the folder's own name
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "prepare.json").write_text('{"corpus": "text", "train": "/home/me/corpus/train", "src": "de"}')
    assert corpus_name(folder) == "corpus/train"  # the user's prefix, not "train"
    assert corpus_name(tmp_path / "no-record") == "no-record"


def test_the_main_jobs_precision_reaches_its_training_command(tmp_path):
    from admin_fairseq import main_job

    for argv, precision, flag in ((["--precision", "bf16"], "bf16", "--bf16-autocast"), ([], "fp32", None),
                                  (["--gpus", "1"], "recipe", "--memory-efficient-fp16")):  # fmt: skip
        settings = main_job.settings_from(main_job.parse_args(argv))
        _, record = main_job.training_command(settings, "admin", tmp_path / "data", tmp_path / "admin")
        assert record.precision == precision, argv
        assert flag is None or flag in record.fairseq_flags, argv
