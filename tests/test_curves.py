"""The rules read off training curves (admin_fairseq/curves.py): the stall rule, on the
committed main-job runs' own logs and on small made-up curves, and the frequency baseline,
checked against the same loss worked out again from the sentencepiece text."""

import math
import re

import pytest

from admin_fairseq import curves as rules
from conftest import REPO


def _main_job_curves(folder):
    """Validation curves of a committed main-job run, read from its console log."""
    curves = {}
    log = (REPO / "results" / folder / "log.txt").read_text()
    for method, update, loss in re.findall(r"\[run \d+ of \d+: (\S+) 12-12\] update (\d+): valid loss ([\d.]+)", log):
        curves.setdefault(method, []).append((int(update), float(loss)))
    return curves


def _bible_baseline():
    """The frequency baseline of the main job's Bible, as scripts/restatus.py recorded it
    from the prepared data (tests/test_curves.py::test_frequency_loss_* checks the function
    that computed it)."""
    note = (REPO / "results" / "main_job_all_methods" / "comparison-today.md").read_text()
    return float(re.search(r"validation loss ([\d.]+) bits", note).group(1))


def test_stalled_rule_on_the_main_jobs_own_logs():
    baseline = _bible_baseline()
    assert baseline == pytest.approx(9.530, abs=1e-3)
    curves = _main_job_curves("main_job")  # the default: 1,400 updates, validated every 100
    assert sorted(curves) == ["admin", "post-ln"]
    assert all(len(c) >= 14 for c in curves.values())  # every 100 updates, and at the end of an epoch
    gains = {m: rules.second_half_gain(c) for m, c in curves.items()}
    assert gains["post-ln"] < 0.25 < 0.5 < gains["admin"]
    assert min(x for _, x in curves["post-ln"]) > baseline - rules.BASELINE_MARGIN
    assert rules.stalled_runs(curves, baseline) == {"post-ln"}
    assert rules.stalled_runs({"post-ln": curves["post-ln"]}, baseline) == {"post-ln"}  # alone too
    assert rules.stalled_runs(curves) == {"post-ln"}  # by the comparison with Admin alone

    curves = _main_job_curves("main_job_all_methods")  # five methods, 400 updates, every 50
    assert sorted(curves) == ["admin", "admin-profiled", "deepnet", "post-ln", "pre-ln"]
    assert all(len(c) == 8 for c in curves.values())
    gains = {m: rules.second_half_gain(c) for m, c in curves.items()}
    assert gains["post-ln"] == pytest.approx(9.581 - 9.491)  # update 200 to its best
    assert min(g for m, g in gains.items() if m != "post-ln") > 0.85
    assert rules.stalled_runs(curves, baseline) == {"post-ln"}
    assert rules.stalled_runs(curves) == {"post-ln"}


def test_stalled_rule_on_the_short_corpus_run():
    """results/main_job_short: the main job's defaults on 11,417 short verse pairs
    (scripts/short_pairs.py). Post-LN ends at the frequency baseline its table states; the
    rule finds it stalled from its own curve and the baseline, without Admin's."""
    table = (REPO / "results" / "main_job_short" / "comparison.md").read_text()
    baseline = float(re.search(r"has validation loss ([\d.]+)", table).group(1))
    assert baseline == pytest.approx(9.525, abs=1e-3)
    assert "| post-ln | 12-12 | 1x2048 | 1400 | 9.359 | stalled |" in table and "| admin |" in table
    curves = _main_job_curves("main_job_short")
    assert rules.second_half_gain(curves["post-ln"]) < rules.STALL_GAIN
    assert rules.stalled_runs(curves, baseline) == {"post-ln"}
    assert rules.stalled_runs({"post-ln": curves["post-ln"]}, baseline) == {"post-ln"}
    assert rules.stalled_runs({"post-ln": curves["post-ln"]}) == set()  # alone, without a baseline


def test_stalled_at_the_frequency_baseline_needs_no_other_run():
    flat = [(100, 9.6), (200, 9.55), (300, 9.5), (400, 9.5)]
    good = [(100, 9.0), (200, 8.4), (300, 7.9), (400, 7.5)]
    assert rules.stalled_runs({"a": flat}) == set()  # no baseline, nothing to compare with
    assert rules.stalled_runs({"a": flat}, 9.53) == {"a"}  # flat at what the data give unlearnt
    assert rules.stalled_runs({"a": flat}, 10.2) == set()  # flat, but 0.7 below the baseline
    assert rules.stalled_runs({"a": flat, "b": good}, {"a": 9.53, "b": 9.53}) == {"a"}
    assert rules.stalled_runs({"b": good}, 9.53) == set()  # still falling: never stalled
    assert rules.stalled_runs({"a": flat[:1]}, 9.53) == set()  # one point: no judgement


def test_stalled_when_the_other_run_gains_little_too():
    """The short corpus of docs/main-job.md, as the issue saw it: Post-LN flat from update 200
    at 8.96, Admin at 6.84 but only 0.36 better over its second half than at its middle. The
    comparison with Admin alone cannot call Post-LN stalled; the frequency baseline can."""
    post_ln = [(100, 9.40), (200, 9.02), (400, 8.99), (700, 8.97), (1000, 8.96), (1400, 8.96)]
    admin = [(100, 9.30), (200, 8.40), (400, 7.60), (700, 7.20), (1000, 6.95), (1400, 6.84)]
    assert rules.second_half_gain(admin) == pytest.approx(0.36)
    assert rules.stalled_runs({"post-ln": post_ln, "admin": admin}) == set()
    assert rules.stalled_runs({"post-ln": post_ln, "admin": admin}, 9.2) == {"post-ln"}


def test_stalled_needs_a_run_that_kept_improving_and_a_gap_to_the_best():
    flat = [(100, 9.6), (200, 9.55), (300, 9.5), (400, 9.5)]
    good = [(100, 9.0), (200, 8.4), (300, 7.9), (400, 7.5)]
    assert rules.stalled_runs({"a": flat, "b": list(flat)}) == set()  # nobody improved
    assert rules.stalled_runs({"a": flat, "b": good}) == {"a"}
    near = [(u, x - 1.5) for u, x in flat]  # flat at 8.0-8.1: within 1.0 of the best (7.5)
    assert rules.stalled_runs({"a": near, "b": good}) == set()
    assert rules.stalled_runs({"a": flat[:1], "b": good}) == set()  # one point: no judgement


def _text_frequency_loss(spm_dir, bin_dir, tgt, eps):
    """The frequency baseline worked out again from the sentencepiece text, apart from the
    binarized files that rules.frequency_loss reads: counts of the pieces of train.TGT and
    one end-of-sentence per line, add-one over fairseq's dictionary, mixed with uniform as
    label smoothing eps makes best, scored on valid.TGT with fairseq's label-smoothed loss,
    in bits."""
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [
        line.split()[0] for line in (bin_dir / f"dict.{tgt}.txt").read_text(encoding="utf-8").splitlines()]
    known = set(symbols)

    def tokens(split):
        for line in (spm_dir / f"{split}.{tgt}").read_text(encoding="utf-8").splitlines():
            yield from (t if t in known else "<unk>" for t in line.split())
            yield "</s>"

    counts = {}
    for t in tokens("train"):
        counts[t] = counts.get(t, 0) + 1
    total, size = sum(counts.values()), len(symbols)
    eps_i = eps / (size - 1)
    q = {v: (1 - eps - eps_i) * (counts.get(v, 0) + 1) / (total + size) + eps_i for v in symbols}
    assert sum(q.values()) == pytest.approx(1.0)
    valid = list(tokens("valid"))
    nll = sum(-math.log(q[t]) for t in valid) / len(valid)
    smooth = sum(-math.log(x) for x in q.values())
    return ((1 - eps - eps_i) * nll + eps_i * smooth) / math.log(2)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_frequency_loss_is_the_unigram_models_loss(bible, eps):
    got = rules.frequency_loss(bible["bin"], "en", "fr", eps)
    want = _text_frequency_loss(bible["raw"] / "spm", bible["bin"], "fr", eps)
    assert got == pytest.approx(want, rel=1e-9)
    assert 5 < got < math.log2(1000 + 8)  # better than uniform over the pieces, far from zero
    assert rules.frequency_loss(bible["bin"], "en", "de", eps) is None  # no such files
