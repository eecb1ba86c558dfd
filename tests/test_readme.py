"""Keep the README from drifting away from the code."""

import json
import re
import subprocess
import sys

from fairseq.models import ARCH_MODEL_REGISTRY

from admin_fairseq.core.omega import omega_table

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _run(block):
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_python_examples_run_and_print_what_they_say():
    admin_example, reinmax_example = _code_blocks("python")
    assert _run(admin_example) == ["torch.Size([5, 32])", "2.6013"]
    assert _run(reinmax_example) == ["True torch.Size([8, 10])"]


def test_reinmax_table_is_the_scripts_output():
    table = (REPO / "results" / "reinmax" / "results.md").read_text(encoding="utf-8")
    assert table in README


def test_omega_table_is_the_scripts_output():
    rows = [12, 18, 24, 36, 54, 120, 200, 300]
    assert f"python scripts/omega_table.py {' '.join(map(str, rows))}" in README
    assert omega_table(rows) in README


def test_every_preset_is_documented_and_every_documented_arch_exists():
    ours = {a for a, m in ARCH_MODEL_REGISTRY.items() if m.__module__.startswith("admin_fairseq")}
    documented = set(re.findall(r"`(transformer_admin\w*)`", README))
    assert ours == documented
    for arch in re.findall(r"--arch (\S+)", README):
        if not arch.endswith("..."):
            assert arch in ARCH_MODEL_REGISTRY, arch


def test_every_admin_flag_is_documented():
    for flag in ("--admin-init", "--admin-output-change-scale", "--admin-as-parameter"):
        assert f"| `{flag}` |" in README


def test_output_change_summary_is_the_scripts_output():
    summary = (REPO / "results" / "output_change" / "summary.md").read_text(encoding="utf-8")
    assert summary in README
    assert "results/output_change/output_change.png" in README


def test_benchmark_table_is_the_scripts_output():
    table = (REPO / "results" / "bench_training" / "results.md").read_text(encoding="utf-8")
    assert table in README


def test_main_job_table_is_the_runs_output():
    run = REPO / "results" / "main_job"
    assert (run / "comparison.md").read_text(encoding="utf-8") in README
    assert "results/main_job/loss_curves.png" in README
    assert (run / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run / "main_job.json").read_text())
    minutes = record["seconds"]["total"] / 60
    assert f"{minutes:.1f} minutes" in README  # the time the README states is the run's


def test_readme_commands_name_existing_scripts_and_modules():
    for module in re.findall(r"python -m (admin_fairseq[\w.]*)", README):
        path = REPO / (module.replace(".", "/") + ".py")
        assert path.exists() or (REPO / module.replace(".", "/") / "__init__.py").exists(), module
    for script in re.findall(r"bash (recipes/\w+\.sh|scripts/\w+\.sh)", README):
        assert (REPO / script).exists(), script
    for target in re.findall(r"^make (\w[\w-]*)", README, flags=re.M):
        assert re.search(rf"^{target}:", (REPO / "Makefile").read_text(), flags=re.M), target


def test_seed_table_is_the_scripts_output_on_the_committed_runs():
    folders = [REPO / "results" / "main_job"] + sorted((REPO / "results" / "main_job_seeds").glob("seed*"))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "seed_table.py"), *map(str, folders)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = (REPO / "results" / "main_job_seeds" / "summary.md").read_text(encoding="utf-8")
    assert result.stdout == summary
    assert summary in README
