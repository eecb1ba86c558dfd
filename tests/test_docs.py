"""docs/published-settings.md cannot drift: its "ours" column is what the code runs."""

import re
import shlex
import subprocess
import sys

import pytest

from admin_fairseq.recipes import evaluate, iwslt14, prepare, train

from conftest import REPO

PAGE = (REPO / "docs" / "published-settings.md").read_text(encoding="utf-8")
MARKER = re.compile(r"<!-- dry-run: (.*?) corpus=(\S+) -->\n(.*?)(?=\n## |\Z)", re.S)


def _tables():
    for args, corpus, body in MARKER.findall(PAGE):
        rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
        yield args, corpus, [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def _dry_run(args, corpus):
    result = subprocess.run([sys.executable, "-m", "admin_fairseq.recipes.train", "--data",
                             f"data/{corpus}", "--depth", "6-6", *shlex.split(args), "--dry-run"],
                            capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout.strip().splitlines()[-1])


def _spans(cell):
    return [span for span in re.findall(r"`([^`]+)`", cell) if span.startswith("--")]


TABLES = list(_tables())


def test_the_page_has_its_four_tables():
    assert [args.split()[1] for args, _, _ in TABLES] == ["8x4096", "128x4096", "80x8000", "1x4096"]
    assert all(len(rows) >= 10 for _, _, rows in TABLES)


@pytest.mark.parametrize("args,corpus,rows", TABLES, ids=[t[0].split()[1] for t in TABLES])
def test_ours_column_is_what_the_dry_run_prints(args, corpus, rows):
    cmd = _dry_run(args, corpus)
    flags = cmd[cmd.index("--") + 1:]
    tgt = corpus.split("-")[-1]
    checked = 0
    for setting, published, source, ours, same, why in rows:
        assert source, setting
        assert same in ("yes", "no"), setting
        if same == "no":
            assert why, f"{setting}: a deviation needs its reason"
        for span in _spans(ours):
            name, _, value = span.partition(" ")
            if name == "--avg-epochs":
                window = train.RECIPES
                recipe = train.PUBLISHED_BATCHES[args.split()[1]][0]
                assert value == "{}-{}".format(*window[recipe]["window"]), setting
            elif name in ("--beam", "--lenpen"):
                beam, lenpen = evaluate.PUBLISHED_DECODING.get(tgt, evaluate.DEFAULT_DECODING)
                assert value == str(beam if name == "--beam" else lenpen), setting
            elif name == "--vocab-size":
                expected = iwslt14.VOCAB_SIZE if corpus == iwslt14.NAME else prepare.WMT[corpus].vocab_size
                assert int(value) == expected, setting
            elif not value:
                assert name in flags, f"{setting}: {name} is not in the dry run"
            else:
                at = [i for i, f in enumerate(flags) if f == name]
                assert at, f"{setting}: {name} is not in the dry run"
                assert flags[at[-1] + 1] == value, f"{setting}: {name} is {flags[at[-1] + 1]}, the page says {value}"
            checked += 1
    assert checked >= 10


def test_nothing_cites_a_file_outside_the_repository():
    texts = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "admin_fairseq").rglob("*.py"),
             *(REPO / "recipes").rglob("*.sh"), *(REPO / "scripts").glob("*")]  # fmt: skip
    for path in texts:
        if path.is_file():
            assert "REFERENCE.md" not in path.read_text(encoding="utf-8", errors="replace"), path
