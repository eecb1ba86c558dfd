#!/usr/bin/env python
"""CTranslate2's CPU speed by GEMM backend, thread count and compute type, on one model.

    python scripts/probe_ct2_backends.py --model models/admin-ct2 --source data/test.en \
        --out results/bench_translate/backends.md

Each setting runs in its own process (CTranslate2 reads ``CT2_USE_MKL`` when it loads):
Intel MKL (CTranslate2's default on Intel CPUs) or not (``CT2_USE_MKL=0``), 1 or 2 threads,
float32 or int8; the first ``--sentences`` source lines, sorted by length, in batches of 64,
beam 4, at most 200 tokens. It prints, and writes to ``--out``, the seconds of translation of
each setting (the median of ``--repeats``).
"""

import argparse
import itertools
import os
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import sys, time, ctranslate2, sentencepiece
folder, source, n, threads, compute = sys.argv[1:6]
sp = sentencepiece.SentencePieceProcessor(model_file=folder + "/spm.model")
lines = [l for l in open(source, encoding="utf-8").read().splitlines() if l.strip()][:int(n)]
batch = sorted((sp.encode(l, out_type=str) for l in lines), key=len)
translator = ctranslate2.Translator(folder, device="cpu", intra_threads=int(threads), compute_type=compute)
start = time.time()
for k in range(0, len(batch), 64):
    translator.translate_batch(batch[k:k + 64], beam_size=4, max_decoding_length=200)
print(time.time() - start)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--model", required=True, help="a CTranslate2 folder written by admin_fairseq.ct2")
    parser.add_argument("--source", required=True, help="source text, one sentence per line")
    parser.add_argument("--out", required=True, help="Markdown file for the table")
    parser.add_argument("--sentences", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = ["| GEMM backend | threads | compute type | translation (s) |", "|---|---|---|---|"]
    for mkl, threads, compute in itertools.product(("default", "0"), (1, 2), ("float32", "int8")):
        env = dict(os.environ)
        env.pop("CT2_USE_MKL", None)
        if mkl == "0":
            env["CT2_USE_MKL"] = "0"
        times = []
        for _ in range(args.repeats):
            result = subprocess.run([sys.executable, "-c", _CHILD, args.model, args.source, str(args.sentences),
                                     str(threads), compute], capture_output=True, text=True, env=env)  # fmt: skip
            if result.returncode != 0:
                raise SystemExit(result.stderr[-2000:])
            times.append(float(result.stdout.strip().splitlines()[-1]))
        backend = "CTranslate2's default (MKL on Intel)" if mkl == "default" else "CT2_USE_MKL=0"
        rows.append(f"| {backend} | {threads} | {compute} | {statistics.median(times):.1f} |")
        print(rows[-1], flush=True)
    text = "\n".join(rows) + (f"\n\n{args.sentences} sentences of {Path(args.source).name}, median of "
                              f"{args.repeats} runs.\n")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
