"""--corpus text: the user's own parallel files, and every bad input a user meets first.

The corpus used here is not the repository's: plain-text files written by the test (Bible
verses the recipe fixture prepared, saved as a user would have them, one side gzipped)."""

import gzip
import json
import os
import shutil

import pytest

from admin_fairseq.corpora import text as text_corpus
from admin_fairseq.recipes import RecipeError, prepare
from admin_fairseq.recipes.prepare import check_prepared

from conftest import run_module


def _prepare(out, *args):
    return run_module("admin_fairseq.recipes.prepare", "--corpus", "text", "--out", out, *args)


def _write(path, lines, newline="\n", encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode(encoding))
    return path


PAIRS = [(f"the {i} house is red", f"das {i} haus ist rot") for i in range(50)]


def _corpus(tmp_path, pairs=PAIRS, name="train"):
    src = _write(tmp_path / "corpus" / f"{name}.en", [s for s, _ in pairs])
    _write(tmp_path / "corpus" / f"{name}.de", [t for _, t in pairs])
    return src.with_suffix("")


def _refused(tmp_path, *args):
    out = tmp_path / "data"
    result = _prepare(out, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert not out.exists(), "a refused preparation must leave no data folder behind"
    return result.stderr


@pytest.mark.slow
def test_a_users_corpus_is_prepared_like_the_others(bible_recipe_data, tmp_path):
    corpus = tmp_path / "mine"
    corpus.mkdir()
    shutil.copy(bible_recipe_data / "train.en", corpus / "all.en")
    with open(bible_recipe_data / "train.fr", "rb") as f_in, gzip.open(corpus / "all.fr.gz", "wb") as f_out:
        shutil.copyfileobj(f_in, f_out)  # one side gzipped
    out = tmp_path / "data" / "my-en-fr"
    result = _prepare(out, "--src", "en", "--tgt", "fr", "--train", corpus / "all", "--vocab-size", "600")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "valid: 100 training pairs held out at random (seed 1" in result.stdout
    assert "test: 100 training pairs held out at random (seed 1" in result.stdout
    assert check_prepared(out) == ("en", "fr")
    record = json.loads((out / "counts.json").read_text())
    lines = record["lines"]
    assert lines["valid.en"] == lines["valid.fr"] == 100 and lines["test.fr"] == 100
    assert lines["train.en"] <= 2000 - 200 and lines["spm/train.en"] == lines["train.en"]
    assert set(record["inputs_sha256"]) == {str(corpus / "all.en"), str(corpus / "all.fr.gz")}
    held = set((out / "test.en").read_text().splitlines())
    assert not held & set((out / "train.en").read_text().splitlines())  # really held out
    again = _prepare(out, "--src", "en", "--tgt", "fr", "--train", corpus / "all", "--vocab-size", "600")
    assert again.returncode == 0 and "the split files are already there" in again.stdout
    assert "already binarised" in again.stdout
    assert again.stdout.count("[1/3]") == 1, again.stdout  # step 1 is announced once


def test_sides_with_different_line_counts_are_refused(tmp_path):
    prefix = _corpus(tmp_path)
    _write(tmp_path / "corpus" / "train.de", [t for _, t in PAIRS[:-1]])
    err = _refused(tmp_path, "--src", "en", "--tgt", "de", "--train", prefix)
    assert "train.en has 50 lines but" in err and "train.de has 49" in err and "aligned" in err


def test_a_file_that_is_not_utf8_names_the_line_and_bytes(tmp_path):
    prefix = _corpus(tmp_path)
    lines = [t for _, t in PAIRS]
    lines[6] = "das haus ist gr\u00fcn"
    _write(tmp_path / "corpus" / "train.de", lines, encoding="latin-1")
    err = _refused(tmp_path, "--src", "en", "--tgt", "de", "--train", prefix)
    assert "train.de, line 7: not UTF-8" in err and "\\xfcn" in err


def test_empty_pairs_are_dropped_and_counted_but_an_empty_side_is_an_error(tmp_path):
    pairs = list(PAIRS)
    pairs[3] = ("   ", "das haus")
    pairs[9] = ("the house", "")
    prefix = _corpus(tmp_path, pairs)
    messages = []
    kept, _, dropped = text_corpus.read_pair(prefix, "en", "de", log=messages.append)
    assert dropped == 2 and len(kept) == 48
    assert "dropped 2 of 50 pairs with an empty side" in messages[0]

    _write(tmp_path / "corpus" / "train.de", [" "] * 50)
    err = _refused(tmp_path, "--src", "en", "--tgt", "de", "--train", prefix)
    assert "train.de is empty" in err


def test_windows_line_endings_are_handled(tmp_path):
    _write(tmp_path / "corpus" / "train.en", [s for s, _ in PAIRS], newline="\r\n")
    _write(tmp_path / "corpus" / "train.de", [t for _, t in PAIRS])
    pairs, _, dropped = text_corpus.read_pair(tmp_path / "corpus" / "train", "en", "de", log=print)
    assert dropped == 0 and pairs == PAIRS  # no "\r" left on any sentence


@pytest.mark.parametrize("flag,code", [("--src", "english"), ("--tgt", "D"), ("--src", "e1")])
def test_language_codes_must_be_two_or_three_letters(tmp_path, flag, code):
    prefix = _corpus(tmp_path)
    args = {"--src": "en", "--tgt": "de", flag: code}
    err = _refused(tmp_path, "--src", args["--src"], "--tgt", args["--tgt"], "--train", prefix)
    assert f"{flag} {code!r} is not a language code of two or three lower-case letters" in err


def test_the_same_file_for_both_sides_is_refused(tmp_path):
    prefix = _corpus(tmp_path)
    os.remove(tmp_path / "corpus" / "train.de")
    os.symlink(tmp_path / "corpus" / "train.en", tmp_path / "corpus" / "train.de")
    err = _refused(tmp_path, "--src", "en", "--tgt", "de", "--train", prefix)
    assert "are the same file" in err
    err = _refused(tmp_path, "--src", "en", "--tgt", "en", "--train", prefix)
    assert "--src and --tgt are both 'en'" in err


def test_missing_files_and_flags_are_named(tmp_path):
    err = _refused(tmp_path, "--src", "en", "--tgt", "de", "--train", tmp_path / "nowhere" / "train")
    assert "nowhere/train.en" in err and "train.en.gz" in err
    err = _refused(tmp_path, "--src", "en", "--tgt", "de")
    assert "--corpus text needs --train PREFIX" in err
    result = run_module("admin_fairseq.recipes.prepare", "--corpus", "bible-en-fr", "--out", tmp_path / "b",
                        "--train", "x")  # fmt: skip
    assert result.returncode == 2 and "--train applies to --corpus text only" in result.stderr


def test_a_test_set_that_overlaps_the_training_set_is_warned_about(tmp_path):
    prefix = _corpus(tmp_path)
    test = _corpus(tmp_path, PAIRS[:4] + [("a new sentence", "ein neuer satz")], name="test")
    valid = _corpus(tmp_path, [("another sentence", "ein anderer satz")], name="valid")
    messages = []
    with pytest.raises(RecipeError, match=r"cannot give 8,000 sentencepiece pieces \(at most \d+\); give a smaller --vocab-size"):
        # the tiny corpus cannot hold 8,000 pieces: the warning comes before that refusal
        prepare.prepare("text", tmp_path / "data", log=messages.append,
                        text={"src": "en", "tgt": "de", "train": prefix, "valid": valid, "test": test})
    assert any("warning: 4 of 5 test pairs have a source sentence that is also in the training data" in m
               for m in messages), messages
