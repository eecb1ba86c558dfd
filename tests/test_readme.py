"""Keep the README and the docs pages from drifting away from the code and the results."""

import json
import re
import subprocess
import sys

import pytest
from fairseq.models import ARCH_MODEL_REGISTRY

from admin_fairseq import plugin

plugin.load()  # registers the presets this file checks against the README

from admin_fairseq.core.omega import omega_table

from conftest import REPO
from shared_runs import readme_data

README = (REPO / "README.md").read_text(encoding="utf-8")
PAGES = {path: path.read_text(encoding="utf-8") for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
TEXT = "\n".join(PAGES.values())  # the README and every docs page


def _code_blocks(language, text=TEXT):
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _run(block):
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_python_examples_run_and_print_what_they_say():
    translate_example, admin_example = _code_blocks("python", PAGES[REPO / "docs" / "usage.md"])
    (reinmax_example,) = _code_blocks("python", PAGES[REPO / "docs" / "reinmax.md"])
    assert _run(admin_example) == ["torch.Size([5, 32])", "2.6013"]
    assert _run(reinmax_example) == ["True torch.Size([8, 10])"]
    # the translation example needs the main job's model; tests/test_deploy.py runs load()
    # on a trained one. Here: it is Python, and every keyword the page names is load()'s.
    compile(translate_example, "usage.md", "exec")
    import inspect

    from admin_fairseq.translate import load

    section = PAGES[REPO / "docs" / "usage.md"].split("## From Python", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(\w+)`", section.split("keywords", 1)[1].split(";", 1)[0])
    assert named and set(named) <= set(inspect.signature(load).parameters), named


def test_reinmax_table_is_the_scripts_output():
    table = (REPO / "results" / "reinmax" / "results.md").read_text(encoding="utf-8")
    assert table in TEXT


def test_omega_table_is_the_scripts_output():
    rows = [12, 18, 24, 36, 54, 120, 200, 300]
    assert f"python scripts/omega_table.py {' '.join(map(str, rows))}" in TEXT
    assert omega_table(rows) in TEXT


def test_every_preset_is_documented_and_every_documented_arch_exists():
    ours = {a for a, m in ARCH_MODEL_REGISTRY.items() if m.__module__.startswith("admin_fairseq")}
    documented = set(re.findall(r"`(transformer_admin\w*)`", TEXT))
    assert ours == documented
    for arch in re.findall(r"--arch ([\w.]+)", TEXT):
        if not arch.endswith("..."):
            assert arch in ARCH_MODEL_REGISTRY, arch


def test_every_admin_flag_is_documented():
    """Each flag the model adds to fairseq's parser has its row in docs/usage.md's table."""
    import argparse

    from fairseq.models import MODEL_REGISTRY

    from admin_fairseq import plugin

    plugin.load()
    parser = argparse.ArgumentParser()
    MODEL_REGISTRY["transformer_admin"].add_args(parser)
    ours = sorted(flag for action in parser._actions for flag in action.option_strings
                  if flag.startswith(("--admin", "--deepnet", "--bf16")))  # fmt: skip
    assert len(ours) >= 7, ours
    usage = PAGES[REPO / "docs" / "usage.md"]
    for flag in ours:
        assert f"| `{flag}` |" in usage, flag


def test_output_change_summary_is_the_scripts_output():
    summary = (REPO / "results" / "output_change" / "summary.md").read_text(encoding="utf-8")
    assert summary in TEXT
    assert "results/output_change/output_change.png" in TEXT


def test_benchmark_table_is_the_scripts_output():
    table = (REPO / "results" / "bench_training" / "results.md").read_text(encoding="utf-8")
    assert table in TEXT


@pytest.mark.parametrize("folder,page,stalled", [("main_job", "README.md", "| post-ln | 12-12 | 1x2048 | 1400 | 9.402 | stalled |"),
                                                 ("main_job_all_methods", "docs/main-job.md", "| post-ln | 12-12 | 1x2048 | 400 | 9.491 | stalled |")])  # fmt: skip
def test_main_job_tables_are_the_runs_output(folder, page, stalled):
    """The page shows the run's table as today's rule reads its log (scripts/restatus.py,
    with the frequency baseline it computed from the run's data), and today's plot."""
    text = PAGES[REPO / page]
    run = REPO / "results" / folder
    sys.path.insert(0, str(REPO / "scripts"))
    import restatus

    committed = (run / "comparison-today.md").read_text(encoding="utf-8")
    baseline = float(re.search(r"validation loss ([\d.]+) bits", committed).group(1))  # from --data
    today = restatus.restatus((run / "comparison.md").read_text(encoding="utf-8"),
                              (run / "log.txt").read_text(encoding="utf-8"), baseline)  # fmt: skip
    assert committed == today and today in text and stalled in today
    assert f"results/{folder}/loss_curves-today.png" in text
    assert (run / "loss_curves-today.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run / "main_job.json").read_text())
    minutes = record["seconds"]["total"] / 60
    assert f"{minutes:.1f} minutes" in text  # the time the page states is the run's


def test_commands_name_existing_scripts_and_modules():
    for module in re.findall(r"python -m (admin_fairseq[\w.]*)", TEXT):
        path = REPO / (module.replace(".", "/") + ".py")
        assert path.exists() or (REPO / module.replace(".", "/") / "__init__.py").exists(), module
    for script in re.findall(r"bash (recipes/\w+\.sh|scripts/\w+\.sh)", TEXT):
        assert (REPO / script).exists(), script
    for target in re.findall(r"^make (\w[\w-]*)", TEXT, flags=re.M):
        assert re.search(rf"^{target}:", (REPO / "Makefile").read_text(), flags=re.M), target


@pytest.mark.parametrize("first,seeds,more", [("main_job", "main_job_seeds", "main_job_preln"),
                                              ("main_job_all_methods", "main_job_all_methods_seeds", None)])
def test_seed_tables_are_the_scripts_output_on_the_committed_runs(first, seeds, more):
    """The seed tables are scripts/seed_table.py's output on the committed runs; the README's
    adds the Pre-LN runs (results/main_job_preln/seed*), made apart with the same settings."""
    folders = [REPO / "results" / first] + sorted((REPO / "results" / seeds).glob("seed*"))
    if more:
        folders += sorted((REPO / "results" / more).glob("seed*"))
    assert len(folders) >= 2
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "seed_table.py"), *map(str, folders)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = (REPO / "results" / seeds / "summary.md").read_text(encoding="utf-8")
    assert result.stdout == summary
    assert summary in TEXT


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def _anchors(text):
    """GitHub's anchors of a page's headings."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_link_resolves():
    checked = 0
    for path, text in PAGES.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue  # a web address: not checked offline
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            assert resolved.exists(), f"{path.name}: link to {target}: {resolved} does not exist"
            if anchor:
                assert anchor in _anchors(resolved.read_text(encoding="utf-8")), f"{path.name}: no #{anchor} in {file or path.name}"
            checked += 1
    assert checked >= 30


@pytest.mark.slow
def test_the_readmes_fairseq_example_runs_as_written(bible, readme_run):
    """The README's data, fairseq-train and fairseq-generate commands, run as written: the
    prepare command made the suite's ``bible`` data, the other two ran on it in bash from a
    folder where ``admin_fairseq`` is the plugin's folder, as in the repository root
    (tests/shared_runs.py; tests/test_cli_end_to_end.py reloads, resumes and scores the run)."""
    assert bible["raw"] == readme_data(bible["root"]) and (bible["bin"] / "test.en-fr.fr.bin").exists()
    assert (readme_run / "checkpoints" / "bible-admin-6l" / "checkpoint_last.pt").exists()
    assert re.search(r"Generate test with beam=4: BLEU = [\d.]+", (readme_run / "example.log").read_text())


def test_translation_benchmark_tables_are_the_scripts_output():
    assert (REPO / "results" / "bench_translate" / "results.md").read_text(encoding="utf-8") in README
    sizes = (REPO / "results" / "bench_translate" / "sizes.md").read_text(encoding="utf-8")
    assert sizes in PAGES[REPO / "docs" / "deployment.md"]


def test_seed_table_merges_the_folders_of_one_seed_and_refuses_a_method_twice(tmp_path):
    def folder(name, seed, methods):
        path = tmp_path / name
        path.mkdir()
        (path / "main_job.json").write_text(json.dumps({"settings": {"seed": seed}}))
        rows = "".join(f"{m},{9.0 - k},{k + 1.0},{k + 10.0}\n" for k, m in enumerate(methods))
        (path / "comparison.csv").write_text("method,best_valid_loss,bleu,chrf\n" + rows)
        return str(path)

    both = [folder("a1", 1, ["post-ln", "admin"]), folder("a2", 2, ["post-ln", "admin"]),
            folder("p1", 1, ["pre-ln"]), folder("p2", 2, ["pre-ln"])]  # fmt: skip
    script = [sys.executable, str(REPO / "scripts" / "seed_table.py")]
    result = subprocess.run([*script, *both], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| method | metric | seed 1 | seed 2 | mean |" in result.stdout
    assert [line.split(" | ")[0] for line in result.stdout.splitlines()[2::3]] == ["| post-ln", "| admin", "| pre-ln"]
    again = subprocess.run([*script, *both, folder("x1", 1, ["pre-ln"])], capture_output=True, text=True)
    assert again.returncode != 0 and "seed 1 has pre-ln in more than one folder" in again.stderr
