"""Data cleaning/splitting and the scoring helpers, without downloads."""

import os

import pytest

from admin_fairseq.corpora.bible import clean_verse, parse_pair, split_pairs
from admin_fairseq.evaluation import read_hypotheses, score

from conftest import run_module


def test_clean_verse():
    assert clean_verse("(7:26) L'Éternel dit à Moïse:  Va") == "L'Éternel dit à Moïse: Va"
    assert clean_verse("God`s Spirit, [even] an offering") == "God's Spirit, even an offering"
    assert clean_verse("   ") == ""


def test_split_holds_out_the_test_book():
    pairs = [(b, 1, v, f"s{b}.{v}", f"t{b}.{v}") for b in (1, 2, 41, 42) for v in range(50)]
    splits = split_pairs(pairs, test_book=41, valid_size=10, train_size=100, test_size=20)
    assert [p[0] for p in splits["test"]] == [41] * 20
    assert len(splits["valid"]) == 10 and len(splits["train"]) == 100
    assert all(p[0] != 41 for p in splits["train"] + splits["valid"])
    assert not set(splits["train"]) & set(splits["valid"])
    assert splits == split_pairs(pairs, 41, 10, 100, 20)  # deterministic


def test_parse_pair():
    assert parse_pair("en-de") == ("en", "de")
    with pytest.raises(ValueError, match="--pair must look like SRC-TGT"):
        parse_pair("en")
    with pytest.raises(ValueError, match="language 'es' is not available; choose from en, fr, de"):
        parse_pair("en-es")
    with pytest.raises(ValueError, match="source and target language are both 'fr'"):
        parse_pair("fr-fr")


def test_a_language_the_bible_lacks_is_refused_before_the_download(tmp_path):
    """The check comes first: no 70 MB download, no output folder."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = dict(os.environ, ADMIN_FAIRSEQ_CACHE=str(cache))
    result = run_module("admin_fairseq.recipes.prepare", "--corpus", "bible-en-es", "--out", out, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown --corpus 'bible-en-es'; choose from" in result.stderr
    assert "downloading" not in result.stdout + result.stderr
    assert not cache.exists() and not out.exists()


def test_read_hypotheses_orders_and_checks_coverage():
    out = ["S-1\tsrc", "D-1\t-0.5\tsecond", "H-0\t-0.1\t▁first", "D-0\t-0.1\tfirst", "P-0\t-1"]
    assert read_hypotheses(out, 2) == ["first", "second"]
    assert read_hypotheses(out[2:3], 1, prefix="H") == ["▁first"]
    with pytest.raises(ValueError, match="translated 2 of 3 sentences .*--required-batch-size-multiple 1"):
        read_hypotheses(out, 3)


def test_score_is_sacrebleu():
    refs = ["the cat sat on the mat", "a dog barked loudly"]
    perfect = score(refs, refs)
    assert perfect["bleu"] == pytest.approx(100.0)
    assert score(["x y z", "q"], refs)["bleu"] < 5.0
    with pytest.raises(ValueError, match="must align"):
        score(["one"], refs)


@pytest.mark.slow
def test_the_bible_reruns_only_what_changed(tmp_path):
    from admin_fairseq.recipes import prepare

    messages = []
    kwargs = dict(train_size=500, valid_size=50, test_size=50, log=messages.append)
    record = prepare.prepare("bible-fr-de", tmp_path / "bible", vocab_size=300, **kwargs)
    assert (tmp_path / "bible" / "bin" / "train.fr-de.fr.bin").exists() and (tmp_path / "bible" / "spm.model").exists()
    assert record["lines"]["train.fr"] == 500 and record["lines"]["test.de"] == 50  # counts.json's
    assert sorted(p.name for p in (tmp_path / "bible").glob("*.json")) == [
        ".admin-fairseq-outputs.json", "counts.json", "inputs.json", "prepare.json", "spm.json"]  # one record of counts, as every corpus
    messages.clear()
    prepare.prepare("bible-fr-de", tmp_path / "bible", vocab_size=300, **kwargs)
    assert any("the split files are already there" in m for m in messages) and any("already binarised" in m for m in messages)
    assert not any("learning" in m for m in messages)
    messages.clear()
    prepare.prepare("bible-fr-de", tmp_path / "bible", vocab_size=200, **kwargs)
    assert any("prepared with other settings" in m for m in messages)
    assert len((tmp_path / "bible" / "bin" / "dict.fr.txt").read_text().splitlines()) < 300
    # a redo removes what prepare wrote and nothing else: the user's notes stay
    (tmp_path / "bible" / "notes.txt").write_text("the user's")
    (tmp_path / "bible" / "mine").mkdir()
    messages.clear()
    record = prepare.prepare("bible-fr-de", tmp_path / "bible", vocab_size=250, **kwargs)
    assert any("prepared with other settings" in m for m in messages) and record["lines"]["train.fr"] == 500
    assert (tmp_path / "bible" / "notes.txt").read_text() == "the user's" and (tmp_path / "bible" / "mine").is_dir()