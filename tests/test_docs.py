"""The docs cannot drift from the code: docs/published-settings.md's "ours" column is what the
train step runs; the failure-modes table of docs/reliability.md lists every case the
failure-mode tests run, with its message; docs/development.md explains each change --cpu makes
to a GPU command; docs/cluster.md's omega table is the script's output. (The README's own
tables and commands: tests/test_readme.py.)"""

import json
import re
import shlex
import sys

import pytest

from admin_fairseq.corpora import iwslt14, wmt
from admin_fairseq.recipes import evaluate, plan
from admin_fairseq.recipes.published import PUBLISHED_BATCHES, RECIPES

from conftest import REPO, run_module

PAGE = (REPO / "docs" / "published-settings.md").read_text(encoding="utf-8")
MARKER = re.compile(r"<!-- dry-run: (.*?) corpus=(\S+) -->\n(.*?)(?=\n## |\Z)", re.S)


def _tables():
    for args, corpus, body in MARKER.findall(PAGE):
        rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| setting")]
        yield args, corpus, [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def _dry_run(args, corpus):
    result = run_module("admin_fairseq.recipes.train", "--data", f"data/{corpus}", "--depth", "6-6",
                        *shlex.split(args), "--dry-run", cwd=REPO)  # fmt: skip
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
                window = RECIPES
                recipe = PUBLISHED_BATCHES[args.split()[1]][0]
                assert value == "{}-{}".format(*window[recipe]["window"]), setting
            elif name in ("--beam", "--lenpen"):
                beam, lenpen = evaluate.PUBLISHED_DECODING.get(tgt, evaluate.DEFAULT_DECODING)
                assert value == str(beam if name == "--beam" else lenpen), setting
            elif name == "--vocab-size":
                expected = iwslt14.VOCAB_SIZE if corpus == iwslt14.NAME else wmt.TASKS[corpus].vocab_size
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


# ------------------------------------------------------------------ other pages


def _documented_failure_rows():
    text = (REPO / "docs" / "reliability.md").read_text()
    section = text.split("## Failure modes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_failure_table_lists_every_case_with_its_message():
    from test_failure_modes import CASES

    rows = _documented_failure_rows()
    assert len(CASES) >= 15
    assert set(rows) == {case.id for case in CASES}
    for case in CASES:
        assert case.expect in rows[case.id], case.id


def test_every_cpu_change_is_explained():
    text = (REPO / "docs" / "development.md").read_text()
    for name in plan.CPU_CHANGES:
        assert f"| `{name}` |" in text, f"docs/development.md does not explain the CPU change {name}"


def test_the_omega_fp16_table_is_the_scripts_output_and_in_the_docs():
    sys.path.insert(0, str(REPO / "scripts"))
    import omega_fp16

    table = omega_fp16.markdown(omega_fp16.rows()).strip()
    assert (REPO / "results" / "omega_fp16" / "table.md").read_text().strip() == table
    assert table in (REPO / "docs" / "cluster.md").read_text()


def test_preset_sizes_count_what_a_built_model_holds():
    """The meta-device count of the preset-size script equals the parameters of the model
    built for real."""
    sys.path.insert(0, str(REPO / "scripts"))
    import preset_sizes

    assert preset_sizes.parameters("transformer_admin_tiny", 1000) == \
        preset_sizes.parameters("transformer_admin_tiny", 1000, device="cpu")  # fmt: skip
    assert preset_sizes.parameters("transformer_admin_tiny", 1000)[1:] == (2, 2, 64)


@pytest.mark.slow
def test_the_preset_size_table_is_the_scripts_output_and_in_the_docs():
    sys.path.insert(0, str(REPO / "scripts"))
    import preset_sizes

    table = preset_sizes.markdown(preset_sizes.rows(32000), 32000)
    assert (REPO / "results" / "preset_sizes" / "table.md").read_text() == table
    assert table in (REPO / "docs" / "performance.md").read_text()


def test_the_disk_table_is_the_scripts_output_and_in_the_cluster_page(monkeypatch):
    """docs/cluster.md shows results/disk_peak/table.md, and its rows are what
    scripts/disk_peak.py computes (checked here for the 6-6 and 100-100 rows of 8x4096)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import disk_peak

    committed = (REPO / "results" / "disk_peak" / "table.md").read_text()
    assert committed.split("\n\nComputed by")[0] in (REPO / "docs" / "cluster.md").read_text()
    monkeypatch.setattr(disk_peak, "SETTINGS", [("wmt17-en-de", 32000, "8x4096", 8, ["6-6", "100-100"])])
    for line in disk_peak.markdown(disk_peak.rows()).splitlines()[2:4]:
        assert line in committed, line


def test_the_precision_benchmark_in_the_cluster_page_is_its_results_file():
    results = (REPO / "results" / "bench_precision" / "results.md").read_text().strip()
    assert results in (REPO / "docs" / "cluster.md").read_text()
    rows = json.loads((REPO / "results" / "bench_precision" / "results.json").read_text())["rows"]
    bf16 = next(r for r in rows if r["precision"] == "bf16")
    assert f"({bf16['speed_ratio']:.2f} times its speed)" in (REPO / "docs" / "cluster.md").read_text()
    assert f"({bf16['memory_ratio']:.2f} times:" in (REPO / "docs" / "cluster.md").read_text()


def test_the_monitor_benchmark_in_its_page_is_its_results_file():
    results = (REPO / "results" / "bench_monitor" / "results.md").read_text().strip()
    page = (REPO / "docs" / "monitor.md").read_text()
    assert results in page
    rows = {r["interval"]: r for r in json.loads((REPO / "results" / "bench_monitor" / "results.json").read_text())["rows"]}
    assert f"Every 100 updates the monitor added {100 * (rows[100]['ratio'] - 1):.1f}%" in page
    assert f"every 10 updates, the main job's setting, {100 * (rows[10]['ratio'] - 1):.1f}%" in page
    assert f"added {100 * (rows[100]['ratio'] - 1):.1f}% to the time per update" in (REPO / "docs" / "usage.md").read_text()


def test_the_monitor_page_shows_the_main_jobs_runs_as_their_logs_give_them():
    """docs/monitor.md's table is what the compare step makes of the committed runs' logs,
    and the warnings it quotes are what the replay command gives on them."""
    from admin_fairseq.recipes import compare

    run = REPO / "results" / "main_job_monitor"
    page = (REPO / "docs" / "monitor.md").read_text()
    runs = [compare.summarize(run / "runs" / method) for method in ("post-ln", "admin")]
    table = compare.stability_table(runs)
    assert table == (run / "stability.md").read_text() and table.strip() in page
    assert (run / "stability.png").read_bytes()[:4] == b"\x89PNG" and "results/main_job_monitor/stability.png" in page
    replayed = run_module("admin_fairseq.monitor", run / "runs" / "post-ln")
    assert "140 measurements (updates 10-1400), warm-up 300, peak lr 0.002, factor 10: 9 warning(s)" in replayed.stdout
    assert "update 690: encoder.09.ffn's branch-to-skip variance ratio share/(1-share) is 0.00564 (share 0.00561)" in replayed.stdout
    assert "update 770: decoder.09.ffn's branch-to-skip variance ratio share/(1-share) is 3.2 (share 0.762)" in replayed.stdout
    assert "9 range warnings" in page and "0 warning(s)" in run_module("admin_fairseq.monitor", run / "runs" / "admin").stdout
    logged = (run / "runs" / "admin" / "train.log").read_text().count("WARNING | admin_fairseq.monitor")
    assert f"it reported\n{logged} times" in page
    # the same losses and scores as the README's run, which had no monitor
    # the README's sentence on it
    peaks = {method: max(v for r in log["monitor"].values() for k, v in r.items() if k.startswith("share/"))
             for method, (_, log) in zip(("post-ln", "admin"), runs)}  # fmt: skip
    first = {method: log["monitor"][min(log["monitor"])]["output_change/decoder"]
             for method, (_, log) in zip(("post-ln", "admin"), runs)}  # fmt: skip
    readme = (REPO / "README.md").read_text()
    assert f"(branch share up to {peaks['post-ln']:.2f}); Admin's stay at or below {peaks['admin']:.2f}" in readme
    assert round(first["post-ln"] / first["admin"]) == 9 and "nine times as far as Admin's" in readme
    gnorms = {method: {k: v for k, v in log["monitor"][10].items() if k.startswith("gnorm/")}
              for method, (_, log) in zip(("post-ln", "admin"), runs)}  # fmt: skip
    assert f"(`decoder.11` {gnorms['post-ln']['gnorm/decoder.11']:.2f}, the smallest {min(gnorms['post-ln'].values()):.2g})" in page
    assert max(gnorms["post-ln"], key=gnorms["post-ln"].get) == "gnorm/decoder.11"
    assert f"Admin's is even ({min(gnorms['admin'].values()):.2f} to {max(gnorms['admin'].values()):.2f})" in page
    table_of = lambda folder: (REPO / "results" / folder / "comparison.md").read_text().split("\n\n")[0]  # noqa: E731
    assert table_of("main_job_monitor") == table_of("main_job")


def test_the_no_loss_table_lists_every_misuse_case_with_its_message():
    from test_no_loss import CASES

    text = (REPO / "docs" / "reliability.md").read_text()
    section = text.split("## Nothing you own is lost", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|(.*)\|\s*$", section, re.M))
    assert set(rows) == {case.id for case in CASES}
    for case in CASES:
        assert case.expect.replace("{home}/", "") in rows[case.id], case.id
