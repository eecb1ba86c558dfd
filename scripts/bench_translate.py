#!/usr/bin/env python
"""Translation speed and BLEU of one trained model, four ways, side by side in one run.

    python scripts/bench_translate.py --checkpoint outputs/main/runs/admin/checkpoint_last.pt \
        --out results/bench_translate

The same test sentences (the checkpoint's own test set: Mark for the main job), the same beam,
length penalty and length limit, the same number of CPU threads, for:

1. ``fairseq-generate`` on the binarised test set (the plugin loaded for an Admin model);
2. ``python -m admin_fairseq.translate`` on the checkpoint (fairseq's beam search, raw text);
3. the same command on a CTranslate2 float32 folder made by ``admin_fairseq.ct2``, with its
   default of one batch per thread (``--threads`` batches translated at the same time);
4. the same on an int8 folder (and any other ``--compute-types``);
5. float32 again with ``--intra-threads`` equal to ``--threads``: one batch at a time with
   all threads on it (CTranslate2's own default), for comparison.

Each is timed as a whole command (start-up and model loading included) and as translation
time alone (what each command reports: fairseq-generate's "Translated ... in X s", the
translate command's "translated in X s"); each command runs ``--repeats`` times, in rounds
(every system once per round, so that a slow spell of a shared machine falls on all of
them), and the median is kept (every run's time is in ``results.json``). Target tokens
are the sentencepiece pieces of the output, counted the same way for all. Writes
``{out}/results.md`` (the table) and ``{out}/results.json``.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "scripts"))

from admin_fairseq.ct2 import convert, data_files, read_checkpoint  # noqa: E402
from admin_fairseq.evaluation import score  # noqa: E402
from bench_training import _cpu_name  # noqa: E402  (the same CPU name in every benchmark)
from admin_fairseq.argtypes import finite_float, nonnegative_float, nonnegative_int, positive_int  # noqa: E402


def _timed(command, env):
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.time() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{result.stderr[-3000:]}")
    return wall, result


def run_fairseq_generate(bin_dir, checkpoint, decoding, threads, env):
    command = [str(Path(sys.executable).parent / "fairseq-generate"), str(bin_dir), "--user-dir",
               str(REPO / "admin_fairseq"), "--path", str(checkpoint), "--gen-subset", "test",
               "--beam", str(decoding["beam"]), "--lenpen", str(decoding["lenpen"]),
               "--max-len-a", str(decoding["max_len_a"]), "--max-len-b", str(decoding["max_len_b"]),
               "--batch-size", str(decoding["batch_size"]), "--required-batch-size-multiple", "1",
               "--remove-bpe", "sentencepiece", "--cpu"]  # fmt: skip
    wall, result = _timed(command, env)
    found = re.search(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s", result.stderr + result.stdout)
    if not found:
        raise SystemExit("fairseq-generate printed no 'Translated ... in Xs' line")
    hyps = dict(re.findall(r"^H-(\d+)\t\S+\t(.*)$", result.stdout, flags=re.M))
    return wall, float(found.group(3)), [hyps[str(i)] for i in range(len(hyps))], command


def run_translate(model, source, decoding, threads, env, intra_threads=None):
    command = [sys.executable, "-m", "admin_fairseq.translate", "--model", str(model), "--input", str(source),
               "--beam", str(decoding["beam"]), "--lenpen", str(decoding["lenpen"]),
               "--max-len-a", str(decoding["max_len_a"]), "--max-len-b", str(decoding["max_len_b"]),
               "--batch-size", str(decoding["batch_size"]), "--threads", str(threads)]  # fmt: skip
    if intra_threads:
        command += ["--intra-threads", str(intra_threads)]
    wall, result = _timed(command, env)
    found = re.search(r"translated in ([\d.]+) s", result.stderr)
    return wall, float(found.group(1)), result.stdout.splitlines(), command


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="folder for results.md and results.json")
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--beam", type=positive_int, default=4)
    parser.add_argument("--lenpen", type=finite_float, default=1.0)
    parser.add_argument("--max-len-a", type=nonnegative_float, default=0.0)
    parser.add_argument("--max-len-b", type=nonnegative_int, default=200)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--compute-types", default="int8", help="CTranslate2 types besides float32")
    args = parser.parse_args(argv)
    import ctranslate2
    import sentencepiece
    import torch

    state, model_args, task_args = read_checkpoint(args.checkpoint)
    del state
    bin_dir, src, tgt, spm_path = data_files(model_args, task_args, args.checkpoint)
    source, reference_file = bin_dir.parent / f"test.{src}", bin_dir.parent / f"test.{tgt}"
    references = reference_file.read_text(encoding="utf-8").splitlines()
    pieces = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    decoding = {"beam": args.beam, "lenpen": args.lenpen, "max_len_a": args.max_len_a,
                "max_len_b": args.max_len_b, "batch_size": args.batch_size}  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               CUDA_VISIBLE_DEVICES="")  # fmt: skip
    types = ["float32"] + [t for t in args.compute_types.split(",") if t and t != "float32"]

    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for kind in types:
            folders[kind] = Path(tmp) / f"ct2-{kind}"
            convert(args.checkpoint, folders[kind], quantization=kind, log=lambda msg: print(msg, file=sys.stderr))
        systems = [("fairseq-generate", lambda: run_fairseq_generate(bin_dir, args.checkpoint, decoding,
                                                                    args.threads, env)),
                   ("translate, fairseq checkpoint", lambda: run_translate(args.checkpoint, source, decoding,
                                                                          args.threads, env))]  # fmt: skip
        for kind in types:  # the translate command's default: one batch per thread
            systems.append((f"translate, CTranslate2 {kind}",
                            lambda kind=kind: run_translate(folders[kind], source, decoding, args.threads, env)))
        if args.threads > 1:  # CTranslate2's own default: one batch at a time, all threads on it
            systems.append((f"translate, CTranslate2 float32, --intra-threads {args.threads}",
                            lambda: run_translate(folders["float32"], source, decoding, args.threads, env,
                                                  intra_threads=args.threads)))  # fmt: skip
        # round by round, every system once per round: a slow spell of a shared machine
        # falls on all of them alike instead of on one system's runs
        runs = {name: {"walls": [], "times": []} for name, _ in systems}
        for repeat in range(args.repeats):
            for name, run in systems:
                wall, seconds, hyps, command = run()
                runs[name].update(hyps=hyps, command=command)
                runs[name]["walls"].append(wall)
                runs[name]["times"].append(seconds)
                print(f"[bench] round {repeat + 1}/{args.repeats}, {name}: {wall:.1f} s whole, "
                      f"{seconds:.1f} s translating", file=sys.stderr, flush=True)  # fmt: skip
        rows = []
        for name, _ in systems:
            hyps, command = runs[name]["hyps"], runs[name]["command"]
            tokens = sum(len(pieces.encode(h)) + 1 for h in hyps)  # + end of sentence
            scores = score(hyps, references)
            rows.append({"system": name, "whole_s": statistics.median(runs[name]["walls"]),
                         "translate_s": statistics.median(runs[name]["times"]),
                         "whole_runs_s": runs[name]["walls"], "translate_runs_s": runs[name]["times"],
                         "sentences": len(hyps), "target_tokens": tokens, "bleu": scores["bleu"],
                         "chrf": scores["chrf"], "hypotheses": hyps,
                         "command": " ".join(map(str, command)).replace(tmp, "TMP")})  # fmt: skip
    base = rows[0]
    lines = [
        "| system | whole command (s) | translation (s) | sentences/s | target tokens/s | "
        "speed-up (translation) | BLEU | chrF | lines identical to fairseq-generate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = sum(a == b for a, b in zip(row["hypotheses"], base["hypotheses"]))
        row["identical_lines"] = same
        lines.append(
            f"| {row['system']} | {row['whole_s']:.1f} | {row['translate_s']:.2f} | "
            f"{row['sentences'] / row['translate_s']:.1f} | {row['target_tokens'] / row['translate_s']:.0f} | "
            f"{base['translate_s'] / row['translate_s']:.2f}x | {row['bleu']:.2f} | {row['chrf']:.1f} | "
            f"{same}/{row['sentences']} |"
        )  # fmt: skip
    machine = (f"{_cpu_name()}, {os.cpu_count()} cores, {args.threads} thread(s) for every system; "
               f"torch {torch.__version__}, CTranslate2 {ctranslate2.__version__}")  # fmt: skip
    setting = (f"{len(references)} sentences of {source.name}, beam {args.beam}, lenpen {args.lenpen}, "
               f"max length {args.max_len_a:g} x source + {args.max_len_b}, {args.batch_size} sentences "
               f"per batch, median of {args.repeats} runs, in rounds")  # fmt: skip
    table = "\n".join(lines) + f"\n\n{machine}. {setting}.\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table, encoding="utf-8")
    record = {"command": "python scripts/bench_translate.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine, "setting": setting,
              "rows": [{k: v for k, v in r.items() if k != "hypotheses"} for r in rows]}  # fmt: skip
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
