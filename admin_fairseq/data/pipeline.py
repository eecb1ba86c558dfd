"""Bible corpus -> sentencepiece -> ``fairseq-preprocess``, in one re-runnable call.

    python -m admin_fairseq.data.pipeline --pair en-fr --out data/bible-en-fr-small \
        --train-size 3000 --valid-size 100 --test-size 100 --vocab-size 1000

writes the raw splits and ``stats.json`` to ``--out``, the sentencepiece model and encoded
splits under it, and the binarised data to ``{out}/bin``. Finished steps are skipped.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from admin_fairseq import atomic
from admin_fairseq.data import bible, spm


def fairseq_preprocess(spm_dir, dest, src, tgt, workers=2, log=print):
    """Binarise ``{spm_dir}/{train,valid,test}.{src,tgt}`` with a joined dictionary."""
    dest = Path(dest)
    done = dest / "preprocess.done"
    if done.exists():
        log(f"{dest}: already binarised")
        return dest
    if dest.exists():
        shutil.rmtree(dest)  # a half-written folder from an interrupted run
    exe = Path(sys.executable).parent / "fairseq-preprocess"
    cmd = [str(exe) if exe.exists() else "fairseq-preprocess",
           "--source-lang", src, "--target-lang", tgt, "--joined-dictionary",
           "--trainpref", str(Path(spm_dir) / "train"), "--validpref", str(Path(spm_dir) / "valid"),
           "--testpref", str(Path(spm_dir) / "test"), "--destdir", str(dest),
           "--workers", str(workers)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"fairseq-preprocess failed:\n{(result.stdout + result.stderr)[-3000:]}")
    atomic.write_text(done, "ok\n")
    log(f"{dest}: binarised")
    return dest


def binarize_bible(out_dir, pair="en-fr", train_size=None, valid_size=500, test_size=None,
                   vocab_size=8000, log=print):  # fmt: skip
    """Prepare, encode and binarise the Bible corpus; return ``{raw, spm_model, bin}``."""
    out_dir = Path(out_dir)
    src, tgt = bible.parse_pair(pair)
    signature = {"pair": pair, "train_size": train_size, "valid_size": valid_size,
                 "test_size": test_size, "vocab_size": vocab_size}  # fmt: skip
    record = out_dir / "pipeline.json"
    if record.exists() and json.loads(record.read_text()) != signature:
        log(f"{out_dir}: settings changed, redoing sentencepiece and binarisation")
        for stale in ("spm.model", "spm.vocab", "spm.json", "spm", "bin"):
            path = out_dir / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    bible.prepare(out_dir, pair, valid_size=valid_size, train_size=train_size,
                  test_size=test_size, log=log)  # fmt: skip
    atomic.write_text(record, json.dumps(signature) + "\n")
    spm.train_and_encode(out_dir, src, tgt, vocab_size, log=log)
    binary = fairseq_preprocess(out_dir / "spm", out_dir / "bin", src, tgt, log=log)
    return {"raw": out_dir, "spm_model": out_dir / "spm.model", "bin": binary}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--pair", default="en-fr")
    parser.add_argument("--out", required=True)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--valid-size", type=int, default=500)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        binarize_bible(args.out, args.pair, args.train_size, args.valid_size, args.test_size,
                       args.vocab_size)  # fmt: skip
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
