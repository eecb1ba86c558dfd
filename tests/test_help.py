"""Every command-line entry point of the package and of scripts/, found by itself, answers
--help: exit status 0 and a usage line. A new command is covered without editing this test."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import REPO

MAIN = 'if __name__ == "__main__":'


def entry_points():
    commands = []
    for path in sorted((REPO / "admin_fairseq").rglob("*.py")):
        if MAIN in path.read_text(encoding="utf-8"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            commands.append([sys.executable, "-m", module])
    for path in sorted((REPO / "scripts").glob("*.py")):
        if MAIN in path.read_text(encoding="utf-8"):
            commands.append([sys.executable, str(path)])
    return commands


def test_entry_points_are_found():
    names = {c[-1] for c in entry_points()}
    assert {"admin_fairseq.recipes.prepare", "admin_fairseq.launch", "admin_fairseq.translate",
            str(REPO / "scripts" / "export_transformer.py")} <= names  # fmt: skip
    assert len(names) >= 20


def _help(command):
    return command, subprocess.run([*command, "--help"], capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.mark.slow
def test_every_entry_point_prints_its_help():
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_help, entry_points()))
    failed = [(" ".join(c[1:]), r.returncode, (r.stderr or r.stdout)[-500:]) for c, r in results
              if r.returncode != 0 or "usage:" not in r.stdout]  # fmt: skip
    assert not failed, failed
