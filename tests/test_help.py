"""Every command-line entry point of the package and of scripts/, found by itself, answers
--help: exit status 0 and a usage line. A new command is covered without editing this test."""

import json
import subprocess
import sys

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


#: Runs each entry point's ``__main__`` block with ``--help`` (runpy, as ``python -m`` and
#: ``python script.py`` run them) in one fresh interpreter, outside the test process, so
#: that nothing the tests imported can stand in for an import an entry point lacks; prints
#: one JSON line: [[exit status, stdout, stderr], ...] in the order given.
_RUN_HELPS = r"""
import contextlib, io, json, runpy, sys
results = []
for kind, target in json.loads(sys.argv[1]):
    saved_path, saved_argv = list(sys.path), list(sys.argv)
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [target, "--help"]
    if kind == "path":
        sys.path.insert(0, target.rsplit("/", 1)[0])  # as ``python script.py`` does
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if kind == "module":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException as error:
        code, err = 1, io.StringIO(err.getvalue() + repr(error))
    sys.path[:], sys.argv = saved_path, saved_argv
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


@pytest.mark.slow
def test_every_entry_point_prints_its_help():
    commands = entry_points()
    targets = [["module", c[2]] if c[1] == "-m" else ["path", c[1]] for c in commands]
    result = subprocess.run([sys.executable, "-c", _RUN_HELPS, json.dumps(targets)], capture_output=True,
                            text=True, cwd=REPO, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(results) == len(commands)
    failed = [(" ".join(c[1:]), code, (err or out)[-500:]) for c, (code, out, err) in zip(commands, results)
              if code != 0 or "usage:" not in out]  # fmt: skip
    assert not failed, failed
