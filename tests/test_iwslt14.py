"""IWSLT'14 De-En: the preparation of fairseq's prepare-iwslt14.sh, offline, on a small archive
the test builds in the archive's own format; the published training settings; the recipe chain."""

import csv
import io
import json
import os
import random
import subprocess
import sys
import tarfile

import pytest

from admin_fairseq.corpora import iwslt14
from admin_fairseq.recipes import RecipeError, plan, prepare, train

from conftest import REPO

GERMAN = ("haus", "baum", "katze", "hund", "stadt", "wasser", "licht", "zeit", "welt", "kind",
          "ist", "war", "sieht", "hat", "macht", "groß", "klein", "schön", "alt", "neu")  # fmt: skip
ENGLISH = ("house", "tree", "cat", "dog", "city", "water", "light", "time", "world", "child",
           "is", "was", "sees", "has", "makes", "big", "small", "nice", "old", "new")  # fmt: skip


def _sentence(rng, n):
    picks = [rng.randrange(len(GERMAN)) for _ in range(n)]
    de = " ".join(GERMAN[i] for i in picks).capitalize() + ", oder?"
    en = " ".join(ENGLISH[i] for i in picks).capitalize() + ", right?"
    return de, en


def _talks(n_lines, rng):
    """train.tags.de-en.{de,en}: talk headers (dropped or unwrapped) and text lines."""
    de, en = [], []
    for talk in range(3):
        for side, title in ((de, "Ein Vortrag"), (en, "A talk")):
            side += [f"<url>http://www.ted.com/talks/{talk}.html</url>", f"<keywords>talks, {talk}</keywords>",
                     f"<talkid>{talk}</talkid>", f"<title>{title} {talk}</title>",
                     f"<description>TED {talk}</description>"]  # fmt: skip
        for _ in range(n_lines // 3):
            s, t = _sentence(rng, rng.randrange(3, 12))
            de.append(s)
            en.append(t)
    return de, en


def _xml(sentences, name, lang):
    body = "\n".join(f'<seg id="{i}"> {s} </seg>' for i, s in enumerate(sentences, 1))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n<srcset setid="{name}" srclang="{lang}">\n'
            f'<doc docid="1" genre="lectures">\n<talkid>1</talkid>\n{body}\n</doc>\n</srcset>\n</mteval>\n')  # fmt: skip


def make_archive(path, n_lines=240, extra=None, seed=0):
    """A ``de-en.tgz`` with the real archive's member names and formats (made-up sentences).

    Test set k holds 3 + k sentences, its first one with a curly apostrophe; the training text
    holds one pair of 200 tokens and one with a length ratio of 3, which cleaning drops."""
    rng = random.Random(seed)
    de, en = _talks(n_lines, rng)
    de.append(" ".join(["wort"] * 200))  # over 175 tokens
    en.append(" ".join(["word"] * 200))
    de.append("Ja.")  # 2 tokens against 6: ratio 3
    en.append("Yes , yes , yes .")
    members = {"de-en/train.tags.de-en.de": "\n".join(de) + "\n",
               "de-en/train.tags.de-en.en": "\n".join(en) + "\n"}  # fmt: skip
    for k, name in enumerate((*iwslt14.TEST_SETS, "IWSLT14.TED.tst2013")):  # the last is not used
        pairs = [_sentence(rng, rng.randrange(3, 9)) for _ in range(3 + k)]
        pairs[0] = ("Es ist’s Haus.", "It’s the house.")
        for lang, side in (("de", 0), ("en", 1)):
            members[f"de-en/{name}.de-en.{lang}.xml"] = _xml([p[side] for p in pairs], name, lang)
    members.update(extra or {})
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _prepare(out, raw, *extra):
    return subprocess.run([sys.executable, "-m", "admin_fairseq.recipes.prepare", "--corpus",
                           "iwslt14-de-en", "--out", str(out), "--raw-dir", str(raw), "--offline",
                           *extra], capture_output=True, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def iwslt_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("iwslt")
    (root / "raw").mkdir()
    make_archive(root / "raw" / "de-en.tgz")
    result = _prepare(root / "data", root / "raw", "--vocab-size", "60")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return root, result.stdout


def test_splits_are_those_of_the_fairseq_script(iwslt_data):
    root, stdout = iwslt_data
    data = root / "data"
    rng = random.Random(0)
    de, en = _talks(240, rng)
    unwrap = lambda line: line.replace("<title>", "").replace("</title>", "").replace(
        "<description>", "").replace("</description>", "")  # noqa: E731
    text = [(unwrap(s), unwrap(t)) for s, t in zip(de, en) if not s.startswith(("<url>", "<keywords>", "<talkid>"))]
    assert len(text) == 3 * 2 + 240  # titles and descriptions stay, unwrapped
    tok = {lang: iwslt14.tokenizer(lang) for lang in ("de", "en")}
    expected = [(tok["de"](s).lower(), tok["en"](t).lower()) for s, t in text]  # both long pairs dropped
    valid = [p for i, p in enumerate(expected, 1) if i % 23 == 0]
    rest = [p for i, p in enumerate(expected, 1) if i % 23 != 0]
    read = {name: (data / name).read_text(encoding="utf-8").splitlines()
            for name in ("train.de", "train.en", "valid.de", "valid.en", "test.de", "test.en")}  # fmt: skip
    assert list(zip(read["valid.de"], read["valid.en"])) == valid and len(valid) == 10
    assert list(zip(read["train.de"], read["train.en"])) == rest
    assert read["train.de"][0] == "ein vortrag 0" and read["train.en"][1] == "ted 0"
    assert "<" not in "".join(read["train.de"] + read["train.en"])
    assert read["train.en"][2].endswith(" , right ?")  # tokenized and lower-cased
    assert "cleaning (1-175 tokens, ratio 1.5): kept 246 of 248 pairs" in stdout
    # test: the five sets in the script's order, sizes 3..7; tst2013 is not part of it
    assert len(read["test.de"]) == 3 + 4 + 5 + 6 + 7
    starts = [0, 3, 7, 12, 18]
    assert [read["test.en"][i] for i in starts] == ["it &apos;s the house ."] * 5
    assert [read["test.de"][i] for i in starts] == ["es ist &apos; s haus ."] * 5  # Moses splits apostrophes outside English
    record = json.loads((data / "counts.json").read_text())
    assert record["settings"]["text_form"] == iwslt14.TEXT_FORM
    assert record["lines"]["valid.de"] == 10 and record["lines"]["spm/test.en"] == 25
    assert list(record["inputs_sha256"]) == ["de-en.tgz"]
    assert prepare.check_prepared(data) == ("de", "en")


def test_the_unpacked_folder_gives_the_same_splits(iwslt_data, tmp_path):
    root, _ = iwslt_data
    raw = tmp_path / "raw"
    raw.mkdir()
    with tarfile.open(root / "raw" / "de-en.tgz") as tar:
        tar.extractall(raw, filter="data")
    splits = iwslt14.build_splits(iwslt14.Archive(raw), log=lambda *_: None)
    for split in ("train", "valid", "test"):
        assert [s for s, _ in splits[split]] == (root / "data" / f"{split}.de").read_text().splitlines()


def test_cleaning_rule_is_clean_corpus_n():
    assert iwslt14.keep_pair(1, 1) and iwslt14.keep_pair(175, 175) and iwslt14.keep_pair(2, 3)
    assert not iwslt14.keep_pair(176, 170) and not iwslt14.keep_pair(0, 1)
    assert not iwslt14.keep_pair(2, 4) and not iwslt14.keep_pair(4, 2)  # ratio 2 > 1.5


def test_refusals_name_the_file(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    result = _prepare(tmp_path / "data", raw)
    assert result.returncode == 2
    assert "de-en.tgz is missing" in result.stderr and "wit3.fbk.eu" in result.stderr
    make_archive(raw / "de-en.tgz", extra={"de-en/train.tags.de-en.en": "only one line\n"})
    result = _prepare(tmp_path / "data", raw)
    assert result.returncode == 2 and "train.tags.de-en.de has" in result.stderr
    assert "not aligned" in result.stderr
    assert not (tmp_path / "data" / "counts.json").exists() and not (tmp_path / "data" / "text.done").exists()
    (raw / "de-en.tgz").write_bytes(b"not a tar file")
    result = _prepare(tmp_path / "data2", raw)
    assert result.returncode == 2 and "is not a readable tar archive" in result.stderr
    with pytest.raises(RecipeError, match="has no member IWSLT14.TED.tst2012.de-en.de.xml"):
        with tarfile.open(raw / "de-en.tgz", "w:gz") as tar:
            for lang in ("de", "en"):
                data = b"Hallo Welt .\n"
                info = tarfile.TarInfo(f"de-en/train.tags.de-en.{lang}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        archive = iwslt14.Archive(raw)
        archive.lines("IWSLT14.TED.tst2012.de-en.de.xml")


def test_train_step_uses_the_published_iwslt_settings():
    args = train.settings(["--data", "data/iwslt14-de-en", "--method", "admin-profiled",
                           "--depth", "6-6", "--batch", "1x4096", "--gpus", "1"])  # fmt: skip
    commands, info = plan.build(args, env={})
    cmd = commands[-1]
    published = {"--arch": "transformer_admin_iwslt_de_en", "--optimizer": "radam",
                 "--adam-betas": "(0.9, 0.98)", "--clip-norm": "0.0", "--lr": "7e-4",
                 "--lr-scheduler": "inverse_sqrt", "--warmup-init-lr": "1e-07",
                 "--warmup-updates": "6000", "--max-update": "100000", "--dropout": "0.3",
                 "--attention-dropout": "0.1", "--activation-dropout": "0.1", "--weight-decay": "1e-4",
                 "--criterion": "label_smoothed_cross_entropy", "--label-smoothing": "0.1",
                 "--max-tokens": "4096", "--update-freq": "1", "--seed": "1111",
                 "--fp16-scale-window": "256", "--threshold-loss-scale": "0.03125",
                 "--max-epoch": "90", "--keep-last-epochs": "10", "--distributed-world-size": "1"}  # fmt: skip
    for flag, value in published.items():
        assert cmd[cmd.index(flag) + 1] == value, flag
    assert "--fp16" in cmd and "--share-all-embeddings" in cmd
    assert "--admin-profile-to" in commands[0]  # one profiling run first, as Transformer-Clinic
    assert info.avg_epochs == "81-90" and info.size == "iwslt"
    from fairseq.models import ARCH_MODEL_REGISTRY  # noqa: F401

    from admin_fairseq import plugin

    plugin.load()
    from fairseq.models import ARCH_CONFIG_REGISTRY
    from argparse import Namespace

    shape = Namespace()
    ARCH_CONFIG_REGISTRY["transformer_admin_iwslt_de_en"](shape)
    assert (shape.encoder_embed_dim, shape.encoder_ffn_embed_dim, shape.encoder_attention_heads) == (512, 1024, 4)
    assert (shape.decoder_embed_dim, shape.decoder_ffn_embed_dim, shape.decoder_attention_heads) == (512, 1024, 4)


def test_recipe_dry_run_runs_the_five_published_seeds(tmp_path):
    script = (REPO / "recipes/iwslt14_de_en.sh").read_text()
    assert 'METHODS="${METHODS:-post-ln pre-ln admin-profiled admin}"' in script
    env = dict(os.environ, DRY_RUN="1", TRAIN_ARGS="--gpus 1", RUNS=str(tmp_path / "runs"),
               PYTHON=sys.executable, METHODS="admin-profiled")  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "recipes/iwslt14_de_en.sh"), "train", "evaluate"],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum("step train, run" in line for line in lines) == 5
    assert "step train, run 5 of 5: admin-profiled 6-6 1x4096 seed 5555" in result.stdout
    trains = [line for line in lines if "--admin-profile-from" in line]
    assert len(trains) == 5
    assert [line.split("--seed ")[1].split()[0] for line in trains] == ["1111", "2222", "3333", "4444", "5555"]
    assert all("--fp16 " in line and "--max-tokens 4096 --update-freq 1" in line for line in trains)
    evaluates = [line for line in lines if "admin_fairseq.recipes.evaluate" in line]
    assert len(evaluates) == 5 and evaluates[0].rstrip().endswith("admin-profiled-6-6-1x4096-seed1111")
    bad = subprocess.run(["bash", str(REPO / "recipes/iwslt14_de_en.sh"), "train"], capture_output=True,
                         text=True, env=dict(env, SEEDS="1111 two"))  # fmt: skip
    assert bad.returncode == 2 and "SEEDS must be whole numbers; got 'two'" in bad.stderr


@pytest.mark.slow
def test_chain_on_the_small_archive_with_two_seeds(iwslt_data, tmp_path):
    """prepare (offline) -> train -> evaluate -> compare through recipes/iwslt14_de_en.sh on the
    CPU, two seeds: the table has the tokenized BLEU on the text as prepared and the seed summary."""
    root, _ = iwslt_data
    env = dict(os.environ, PYTHON=sys.executable, DATA=str(root / "data"), RUNS=str(tmp_path / "runs"),
               METHODS="admin", DEPTHS="1-1", SEEDS="1 2", OMP_NUM_THREADS="1",
               TRAIN_ARGS="--cpu --size cpu --log-interval 5 --avg-epochs 2-3",
               EVAL_ARGS="--beam 2")  # fmt: skip
    result = subprocess.run(["bash", str(REPO / "recipes/iwslt14_de_en.sh"), "train", "evaluate", "compare"],
                            capture_output=True, text=True, env=env, timeout=900)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    rows = list(csv.DictReader(open(tmp_path / "runs" / "comparison" / "comparison.csv")))
    assert [(r["method"], r["seed"]) for r in rows] == [("admin", "1"), ("admin", "2")]
    from admin_fairseq.recipes.evaluate import fairseq_bleu

    references = (root / "data" / "test.en").read_text().splitlines()
    for row in rows:
        run = tmp_path / "runs" / row["run"]
        record = json.loads((run / "eval" / "test.json").read_text())
        assert record["checkpoints"] == ["checkpoint2.pt", "checkpoint3.pt"]
        assert "as prepared (moses-tokenized, lower-cased)" in record["tokenized_bleu_method"]
        hyps = (run / "eval" / "hypotheses-test.en").read_text().splitlines()
        assert len(hyps) == len(references) == 25
        assert float(row["tokenized_bleu"]) == pytest.approx(fairseq_bleu(hyps, references))
    table = (tmp_path / "runs" / "comparison" / "comparison.md").read_text()
    assert "| admin | 1-1 | 1x4096 | 1 2 |" in table and "Over seeds" in table
    assert "tok. BLEU: BLEU-4 on the same text by fairseq's scorer" in table  # not the Moses-pass note
