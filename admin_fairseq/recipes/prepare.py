"""Prepare a parallel corpus for the recipes: raw text -> sentencepiece -> fairseq binaries.

    python -m admin_fairseq.recipes.prepare --corpus wmt17-en-de --out data/wmt17-en-de
    python -m admin_fairseq.recipes.prepare --corpus wmt14-en-fr --out data/wmt14-en-fr \
        --raw-dir /datasets/wmt-raw --offline
    python -m admin_fairseq.recipes.prepare --corpus bible-en-fr --out data/bible-en-fr \
        --train-size 3000 --vocab-size 1000
    python -m admin_fairseq.recipes.prepare --corpus text --src de --tgt en \
        --train corpus/train [--valid corpus/dev] [--test corpus/test] --out data/my-de-en

Every corpus ends in the same layout, which the training and evaluation steps read:

    {out}/{train,valid,test}.{src,tgt}   cleaned raw text (test.* is the untouched reference)
    {out}/spm.model, {out}/spm/          joint sentencepiece model and encoded splits
    {out}/bin/                           fairseq-preprocess --joined-dictionary output
    {out}/counts.json                    line count of every produced file, the settings,
                                         and the sha256 of every archive or file it read

Every corpus comes through the same path: :mod:`admin_fairseq.corpora` gives its source (the
languages, the settings recorded in ``prepare.json``, and how to write the six split files),
then this step learns the sentencepiece model, binarises and counts, whatever the corpus.
Steps that finished are skipped when the command is run again; a step interrupted half-way
is redone (files are written under temporary names and renamed). Any problem stops the run
with a message naming the file and what to do.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from admin_fairseq import atomic, command, corpora
from admin_fairseq import outputs as outputs_mod
from admin_fairseq.corpora import iwslt14, text as text_corpus, wmt
from admin_fairseq.corpora.common import split_files
from admin_fairseq.data import spm
from admin_fairseq.errors import UserError
from admin_fairseq.recipes import RecipeError
from admin_fairseq.argtypes import positive_int

CORPORA = corpora.NAMES


def _encode_and_binarize(out_dir, src, tgt, vocab_size, workers, log, how=""):
    """Steps 2 and 3 of every corpus: the joint sentencepiece model and fairseq's binaries."""
    log(f"[2/3] sentencepiece ({vocab_size} joint pieces{', ' + how if how else ''})")
    _sentencepiece(out_dir, src, tgt, vocab_size, workers, log)
    log("[3/3] fairseq-preprocess --joined-dictionary")
    fairseq_preprocess(out_dir / "spm", out_dir / "bin", src, tgt,
                       workers=workers or os.cpu_count() or 1, log=log)  # fmt: skip


def _sentencepiece(out_dir, src, tgt, vocab_size, workers, log):
    """Learn the joint model and encode the splits; a vocabulary the text cannot fill is a
    RecipeError saying the largest size that works."""
    try:
        spm.train_and_encode(out_dir, src, tgt, vocab_size, log=log, threads=workers)
    except RuntimeError as err:
        too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(err))
        if not too_high:
            raise
        raise RecipeError(f"the training text in {out_dir} cannot give {vocab_size:,} sentencepiece "
                          f"pieces (at most {int(too_high.group(1)):,}); give a smaller --vocab-size "
                          "and run the same command again") from None  # fmt: skip


#: what the prepare step writes in its folder, besides the six split files (``raw/``, the
#: download cache, is never claimed nor removed: it may hold archives the user put there)
WRITES = ("text.done", "spm", "spm.model", "spm.vocab", "spm.json", "bin", "counts.json",
          "inputs.json", "cleaning.json", "prepare.json")  # fmt: skip


def _claim(out_dir, source, raw_dir):
    """Own the folder's outputs before anything is written: refuse an output that is one of
    the user's input files (or lies in the --raw-dir they gave), and any name already there
    that prepare did not write."""
    names = [*split_files(source.src, source.tgt), *WRITES]
    outputs = [out_dir / name for name in names]
    outputs_mod.refuse_overlap([("output", p) for p in outputs], [("input", p) for p in source.inputs])
    if raw_dir is not None:
        inside = [p for p in outputs if outputs_mod.inside(p, raw_dir)]
        if inside:
            raise RecipeError(f"output {inside[0]} would be written inside --raw-dir {raw_dir}, "
                              "whose files this command reads; give an --out outside it")  # fmt: skip
    folder = outputs_mod.Folder(out_dir, "prepare")
    folder.claim(names, hint="choose another --out")
    return folder


def _check_settings(folder, settings, log):
    """Start over when the folder was prepared with other settings: remove what prepare
    wrote there, and nothing else."""
    record = folder.path / "prepare.json"
    if record.exists() and json.loads(record.read_text()) != settings:
        log(f"{folder.path} was prepared with other settings; removing what prepare wrote there "
            "and redoing it")  # fmt: skip
        names = folder.owned()
        folder.remove_owned()
        folder.claim(sorted(names))
    atomic.write_text(record, json.dumps(settings) + "\n")


def record_counts(out_dir, src, tgt, settings, log=print):
    """Count the lines of every produced text file, print and write them to counts.json."""
    counts = {}
    for sub in ("", "spm/"):
        for split in ("train", "valid", "test"):
            for lang in (src, tgt):
                path = out_dir / f"{sub}{split}.{lang}"
                counts[f"{sub}{split}.{lang}"] = spm.line_count(path)
    for split in ("train", "valid", "test"):
        if counts[f"{split}.{src}"] != counts[f"{split}.{tgt}"]:
            raise RecipeError(
                f"{out_dir}/{split}.{src} has {counts[f'{split}.{src}']} lines but "
                f"{split}.{tgt} has {counts[f'{split}.{tgt}']}; delete {out_dir} and re-run"
            )
    inputs, cleaning = out_dir / "inputs.json", out_dir / "cleaning.json"
    record = {"src": src, "tgt": tgt, "settings": settings, "lines": counts,
              "inputs_sha256": json.loads(inputs.read_text()) if inputs.exists() else {}}  # fmt: skip
    if cleaning.exists():  # WMT: pairs per training corpus, kept and dropped
        record["cleaning"] = json.loads(cleaning.read_text())
    atomic.write_json(out_dir / "counts.json", record)
    width = max(len(k) for k in counts)
    log("line counts (also in counts.json):")
    for name, n in counts.items():
        log(f"  {name:<{width}} {n:>12,}")
    return record


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


def prepare(corpus, out_dir, raw_dir=None, offline=False, vocab_size=None, train_size=None,
            valid_size=None, test_size=None, workers=None, log=print, text=None):  # fmt: skip
    """Prepare ``corpus`` (one of :data:`CORPORA`) in ``out_dir``; return counts.json's content.

    ``text`` (``--corpus text`` only): ``{"src", "tgt", "train", "valid", "test"}``."""
    out_dir = Path(out_dir)
    options = corpora.Options(raw_dir=raw_dir, offline=offline, vocab_size=vocab_size,
                              train_size=train_size, valid_size=valid_size, test_size=test_size,
                              text=text)  # fmt: skip
    source = corpora.source(corpus, options, out_dir, log)  # checks everything before writing
    folder = _claim(out_dir, source, Path(raw_dir) if raw_dir else None)
    _check_settings(folder, source.settings, log)  # other settings: start afresh
    text_done = out_dir / "text.done"
    if text_done.exists():  # step 1's marker once: a source with no line of its own printed it
        log(f"{'[1/3] ' if source.what else '      '}{out_dir}: the split files are already there")
    else:
        if source.what:
            log(f"[1/3] {source.what}")
        source.write(out_dir, log)
        atomic.write_text(text_done, "ok\n")
    _encode_and_binarize(out_dir, source.src, source.tgt, source.vocab_size, workers, log, source.encoding_note)
    return record_counts(out_dir, source.src, source.tgt, source.settings, log)


def check_prepared(data_dir):
    """Return ``(src, tgt)`` of a finished data folder, or raise RecipeError saying what is
    missing (used by the training and evaluation steps before they start)."""
    data_dir = Path(data_dir)
    hint = ("prepare it first: python -m admin_fairseq.recipes.prepare --corpus CORPUS --out "
            f"{data_dir} (or the recipe's prepare step, e.g. bash recipes/wmt17_en_de.sh prepare)")
    if not data_dir.is_dir():
        raise RecipeError(f"data folder {data_dir} does not exist; {hint}")
    counts = data_dir / "counts.json"
    if not counts.exists():
        raise RecipeError(
            f"data folder {data_dir} is incomplete (no counts.json: preparation did not finish); "
            f"{hint}; it resumes where it stopped"
        )
    record = json.loads(counts.read_text())
    src, tgt = record["src"], record["tgt"]
    needed = ["bin/preprocess.done", f"bin/dict.{src}.txt", f"bin/dict.{tgt}.txt", "spm.model",
              f"test.{tgt}"]  # fmt: skip
    for split in ("train", "valid", "test"):
        for lang in (src, tgt):
            needed += [f"bin/{split}.{src}-{tgt}.{lang}.bin", f"bin/{split}.{src}-{tgt}.{lang}.idx"]
    missing = [name for name in needed if not (data_dir / name).exists()]
    if missing:
        raise RecipeError(
            f"data folder {data_dir} is incomplete (missing {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}); {hint}"
        )
    return src, tgt


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="\n".join([*(f"  {name}: {task.notes}" for name, task in wmt.TASKS.items()),
                          f"  {iwslt14.NAME}: split as fairseq's prepare-iwslt14.sh, "
                          f"{iwslt14.VOCAB_SIZE // 1000}k joint pieces"]),
    )  # fmt: skip
    parser.add_argument("--corpus", required=True, help=f"one of {', '.join(CORPORA)}")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--raw-dir", help="WMT and IWSLT: where the downloaded archives are (or "
                        "go); default {out}/raw. WMT: extracted text files with the archive "
                        "members' names and {valid,test}.{lang} files are used as they are; "
                        f"IWSLT: {iwslt14.ARCHIVE} or the de-en/ folder it unpacks to")  # fmt: skip
    parser.add_argument("--offline", action="store_true",
                        help="WMT and IWSLT: never download; everything must be in --raw-dir")
    parser.add_argument("--vocab-size", type=positive_int, help="joint sentencepiece size (default: "
                        f"40000 wmt14-en-fr, 32000 wmt17-en-de, {iwslt14.VOCAB_SIZE} "
                        "iwslt14-de-en, 8000 bible-* and text)")  # fmt: skip
    parser.add_argument("--train-size", type=positive_int, help="Bible: cap on training pairs")
    parser.add_argument("--valid-size", type=positive_int, help="Bible: validation pairs (default 500)")
    parser.add_argument("--test-size", type=positive_int, help="Bible: cap on test pairs (Mark: 678)")
    parser.add_argument("--workers", type=positive_int, help="threads for encoding and binarising")
    parser.add_argument("--src", help="text: source language code (files PREFIX.SRC)")
    parser.add_argument("--tgt", help="text: target language code (files PREFIX.TGT)")
    parser.add_argument("--train", help="text: PREFIX of the training files (plain or .gz)")
    parser.add_argument("--valid", help="text: PREFIX of the validation files (default: "
                        f"{text_corpus.HELD_OUT_SHARE * 100:.0f}%% of the training pairs, at most "
                        f"{text_corpus.MAX_HELD_OUT}, held out at random)")  # fmt: skip
    parser.add_argument("--test", help="text: PREFIX of the test files (default: held out as --valid)")
    args = parser.parse_args(argv)
    text = {"src": args.src, "tgt": args.tgt, "train": args.train, "valid": args.valid, "test": args.test}
    return command.run("prepare", prepare, args.corpus, args.out, args.raw_dir, args.offline, args.vocab_size,
                       args.train_size, args.valid_size, args.test_size, args.workers, text=text,
                       errors=(UserError, ValueError, RuntimeError, FileNotFoundError))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
