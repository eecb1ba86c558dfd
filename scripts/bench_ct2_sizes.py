#!/usr/bin/env python
"""CTranslate2 on CPU at several model widths: float32 against int8, one batch per thread
against all threads on one batch.

    python scripts/bench_ct2_sizes.py --data outputs/main/data \
        --out results/bench_translate/sizes.md

Only the shapes of a model decide its speed, so each width gets an untrained Admin model
(``--layers`` encoder and decoder layers, feed-forward 4 x width, width / 64 heads): one
``fairseq-train`` update on the data's binarised set, then ``admin_fairseq.ct2`` (the fold,
CTranslate2's converter) to a float32 and an int8 folder. Every translation is forced to
exactly ``--target-tokens`` tokens (minimum = maximum length), so untrained weights decode
as much as trained ones would: ``--sentences`` source lines of the test set, beam 4, in
batches of ``--batch-size``, each setting in a fresh process, median of ``--repeats``.
Writes the table to ``--out`` (and ``.json`` next to it) and prints it.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from admin_fairseq.argtypes import positive_int  # noqa: E402
from admin_fairseq.ct2 import convert, read_checkpoint  # noqa: E402
from bench_training import _cpu_name  # noqa: E402

_CHILD = r"""
import sys, time, ctranslate2, sentencepiece
folder, source, n, batch_size, length, inter, intra = sys.argv[1:8]
sp = sentencepiece.SentencePieceProcessor(model_file=folder + "/spm.model")
lines = [l for l in open(source, encoding="utf-8").read().splitlines() if l.strip()][:int(n)]
pieces = sorted((sp.encode(l, out_type=str) for l in lines), key=len)
batches = [pieces[k:k + int(batch_size)] for k in range(0, len(pieces), int(batch_size))]
translator = ctranslate2.Translator(folder, device="cpu", inter_threads=int(inter), intra_threads=int(intra))
start = time.time()
pending = [translator.translate_batch(b, beam_size=4, min_decoding_length=int(length),
                                      max_decoding_length=int(length), asynchronous=True) for b in batches]
tokens = sum(len(r.result().hypotheses[0]) for futures in pending for r in futures)
print(time.time() - start, tokens)
"""


def _untrained_checkpoint(data_bin, width, layers, save_dir):
    """One update of an Admin model of this width: a checkpoint with the right shapes."""
    command = [str(Path(sys.executable).parent / "fairseq-train"), str(data_bin), "--user-dir",
               str(REPO / "admin_fairseq"), "--arch", "transformer_admin", "--admin-init",
               "--admin-as-parameter", "--share-all-embeddings",
               "--encoder-layers", str(layers), "--decoder-layers", str(layers),
               "--encoder-embed-dim", str(width), "--decoder-embed-dim", str(width),
               "--encoder-ffn-embed-dim", str(4 * width), "--decoder-ffn-embed-dim", str(4 * width),
               "--encoder-attention-heads", str(max(width // 64, 1)),
               "--decoder-attention-heads", str(max(width // 64, 1)),
               "--optimizer", "adam", "--lr", "1e-7", "--max-tokens", "512", "--max-update", "1",
               "--no-epoch-checkpoints", "--no-save-optimizer-state", "--no-progress-bar",
               "--num-workers", "0", "--cpu", "--save-dir", str(save_dir)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"fairseq-train for width {width} failed:\n{result.stderr[-3000:]}")
    return save_dir / "checkpoint_last.pt"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", required=True, help="a prepared data folder (bin/, spm.model, test.SRC)")
    parser.add_argument("--out", required=True, help="Markdown file for the table")
    parser.add_argument("--widths", default="64,256,512,1024")
    parser.add_argument("--layers", type=positive_int, default=6)
    parser.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--sentences", type=positive_int, default=128)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--target-tokens", type=positive_int, default=32)
    parser.add_argument("--repeats", type=positive_int, default=3)
    args = parser.parse_args(argv)
    import ctranslate2

    data = Path(args.data)
    sources = sorted(data.glob("test.*"))
    if not (data / "bin").is_dir() or not sources:
        raise SystemExit(f"--data {data}: needs bin/ and a test.SRC file (a folder written by the main job)")
    source = sources[0]
    modes = [("float32", args.threads, 1), ("int8", args.threads, 1)]
    if args.threads > 1:
        modes += [("float32", 1, args.threads), ("int8", 1, args.threads)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width in [int(w) for w in args.widths.split(",")]:
            started = time.time()
            checkpoint = _untrained_checkpoint(data / "bin", width, args.layers, Path(tmp) / f"w{width}")
            state = read_checkpoint(checkpoint)[0]
            parameters = sum(t.numel() for t in state["model"].values())  # as trained: embeddings shared
            del state
            folders = {}
            for kind in ("float32", "int8"):
                folders[kind] = Path(tmp) / f"w{width}-{kind}"
                convert(checkpoint, folders[kind], quantization=kind, log=lambda msg: None)
            checkpoint.unlink()
            print(f"[sizes] width {width}: model built and converted in {time.time() - started:.0f} s "
                  f"({parameters / 1e6:.1f} M parameters)", file=sys.stderr, flush=True)
            for kind, inter, intra in modes:
                times = []
                for _ in range(args.repeats):
                    result = subprocess.run([sys.executable, "-c", _CHILD, str(folders[kind]), str(source),
                                             str(args.sentences), str(args.batch_size), str(args.target_tokens),
                                             str(inter), str(intra)], capture_output=True, text=True)  # fmt: skip
                    if result.returncode != 0:
                        raise SystemExit(result.stderr[-3000:])
                    seconds, tokens = result.stdout.split()
                    times.append(float(seconds))
                row = {"width": width, "parameters": parameters, "compute_type": kind,
                       "batches_at_a_time": inter, "threads_per_batch": intra,
                       "seconds": statistics.median(times), "target_tokens": int(tokens)}  # fmt: skip
                rows.append(row)
                print(f"[sizes] width {width} {kind} {inter} x {intra}: {row['seconds']:.2f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
            for folder in folders.values():  # hundreds of MB at width 1024
                shutil.rmtree(folder)
    lines = ["| width | parameters (M) | compute type | batches at a time x threads each | translation (s) "
             "| target tokens/s | int8 speed-up |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        float32 = next(r for r in rows if r["width"] == row["width"] and r["compute_type"] == "float32"
                       and r["batches_at_a_time"] == row["batches_at_a_time"])  # fmt: skip
        speedup = f"{float32['seconds'] / row['seconds']:.2f}x" if row["compute_type"] == "int8" else ""
        lines.append(f"| {row['width']} | {row['parameters'] / 1e6:.1f} | {row['compute_type']} | "
                     f"{row['batches_at_a_time']} x {row['threads_per_batch']} | {row['seconds']:.2f} | "
                     f"{row['target_tokens'] / row['seconds']:.0f} | {speedup} |")  # fmt: skip
    setting = (f"{_cpu_name()}, {os.cpu_count()} cores, {args.threads} threads in all; CTranslate2 "
               f"{ctranslate2.__version__}. Untrained Admin models, {args.layers}+{args.layers} layers, "
               f"feed-forward 4 x width, vocabulary of {data / 'bin'}; {args.sentences} sentences of "
               f"{source.name} in batches of {args.batch_size}, beam 4, every output exactly "
               f"{args.target_tokens} tokens; median of {args.repeats} runs")  # fmt: skip
    table = "\n".join(lines) + f"\n\n{setting}.\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    command = "python scripts/bench_ct2_sizes.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "setting": setting, "rows": rows},
                                                   indent=2) + "\n")  # fmt: skip
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
