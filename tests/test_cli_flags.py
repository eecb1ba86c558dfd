"""The project's own command-line tools take whole flag names only: argparse's default would
let a mistyped or future flag (``--train`` next to ``--train-size``) silently mean another."""

import ast
import re
import subprocess
import sys

import pytest

from conftest import REPO


def _parsers():
    for path in sorted([*(REPO / "admin_fairseq").rglob("*.py"), *(REPO / "scripts").glob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name == "ArgumentParser":
                    yield path.relative_to(REPO), node


PARSERS = list(_parsers())


def test_every_parser_turns_abbreviations_off():
    assert len(PARSERS) >= 15  # the recipes, main job, launcher, gpu check, data tools, scripts
    for path, call in PARSERS:
        flags = {k.arg: k.value for k in call.keywords}
        assert "allow_abbrev" in flags, f"{path}:{call.lineno}: ArgumentParser without allow_abbrev=False"
        assert isinstance(flags["allow_abbrev"], ast.Constant) and flags["allow_abbrev"].value is False, path


@pytest.mark.parametrize("module,argv,prefix_of", [
    ("admin_fairseq.main_job", ["--train-siz", "5"], "--train-size"),
    ("admin_fairseq.recipes.prepare", ["--corpus", "text", "--out", "x", "--trai", "c/train"], "--train"),
    ("admin_fairseq.recipes.train", ["--data", "d", "--method", "admin", "--depth", "6-6",
                                     "--batch", "8x4096", "--gpu", "8", "--dry-run"], "--gpus"),
])  # fmt: skip
def test_a_shortened_flag_is_refused_not_guessed(module, argv, prefix_of, tmp_path):
    result = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    shortened = next(a for a in argv if a.startswith("--") and prefix_of.startswith(a) and a != prefix_of)
    assert re.search(rf"error: unrecognized arguments: .*{re.escape(shortened)}\b", result.stderr), result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "outputs").exists()
