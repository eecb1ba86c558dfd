"""The package's floors: every module imports only from its own floor or the floors below.

    floor 0  core and small helpers: torch-only Admin core, errors, atomic writes, outputs,
             argument types, the command wrapper, fairseq log and flag readers, the
             training-curve rules, the checkpoint reader, scoring
    floor 1  fairseq integration: layers, models, optimizer, the monitor's measuring, the
             changes to fairseq, the plugin
    floor 2  recipes: corpora, data, the recipe steps, the launcher, the monitor's replay
    floor 3  applications: the main job, translate, ct2, export, the GPU check, the package face

docs/development.md draws the same table. The imports are read from the source (function-level
imports too), so a module that imports upwards fails here before it forms a circle.
"""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "admin_fairseq"

#: module (or package prefix) -> floor; the longest matching prefix wins
FLOORS = {
    "admin_fairseq.core": 0, "admin_fairseq.errors": 0, "admin_fairseq.atomic": 0,
    "admin_fairseq.outputs": 0, "admin_fairseq.argtypes": 0, "admin_fairseq.command": 0,
    "admin_fairseq.fairseq_log": 0, "admin_fairseq.fairseq_flags": 0, "admin_fairseq.curves": 0,
    "admin_fairseq.checkpoints": 0, "admin_fairseq.evaluation": 0,
    "admin_fairseq.modules": 1, "admin_fairseq.models": 1, "admin_fairseq.optim": 1,
    "admin_fairseq.monitor": 1, "admin_fairseq.checkpoint_compat": 1, "admin_fairseq.resilience": 1,
    "admin_fairseq.plugin": 1, "admin_fairseq.build": 1, "admin_fairseq.local_torchrun": 1,
    "admin_fairseq.recipes": 2, "admin_fairseq.corpora": 2, "admin_fairseq.data": 2,
    "admin_fairseq.launch": 2, "admin_fairseq.monitor.__main__": 2,
    "admin_fairseq.main_job": 3, "admin_fairseq.translate": 3, "admin_fairseq.ct2": 3,
    "admin_fairseq.export": 3, "admin_fairseq.gpu_check": 3, "admin_fairseq.__main__": 3,
    "admin_fairseq": 3,  # the package's face: what it shows users
}  # fmt: skip


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor(name):
    matches = [prefix for prefix in FLOORS if name == prefix or name.startswith(prefix + ".")]
    return FLOORS[max(matches, key=len)]


def imported(path):
    """The ``admin_fairseq`` modules that ``path`` imports (a name taken from a package that
    is one of its modules counts as that module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("admin_fairseq")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("admin_fairseq"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                as_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py")
                as_package = PACKAGE.parent / Path(*sub.split(".")) / "__init__.py"
                found.add(sub if as_module.exists() or as_package.exists() else node.module)
    return found


def test_every_module_has_a_floor_and_imports_only_downwards():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        for target in imported(path):
            if target != name and floor(target) > floor(name):
                upward.append(f"{name} (floor {floor(name)}) imports {target} (floor {floor(target)})")
    assert not upward, "\n".join(upward)


def test_the_walker_sees_an_upward_import(tmp_path):
    """The check above can fail: an import of an application from a helper is caught."""
    helper = PACKAGE / "atomic.py"
    assert floor(module_name(helper)) == 0 and floor("admin_fairseq.main_job") == 3
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from admin_fairseq import main_job, atomic\n")
    assert imported(sample) == {"admin_fairseq.main_job", "admin_fairseq.atomic"}
