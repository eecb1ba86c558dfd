"""Joint sentencepiece model for a parallel corpus, and encoding of its splits.

    python -m admin_fairseq.data.spm --data data/bible-en-fr --src en --tgt fr --vocab-size 8000

learns ``spm.model`` on the training text of both languages and writes the encoded splits
to ``{data}/spm/{split}.{lang}``, ready for ``fairseq-preprocess --joined-dictionary``.
Re-running reuses a finished model and finished files.
"""

import argparse
import json
import os
from pathlib import Path

from admin_fairseq import atomic
from admin_fairseq.argtypes import positive_int

SPLITS = ("train", "valid", "test")
#: Fixed so that two machines learn byte-identical models: sentencepiece records the thread
#: count (and the input paths) in the model, and the learned pieces depend on the thread count.
TRAIN_THREADS = 16
TRAIN_SEED = 1


def line_count(path):
    """Lines of a file, counted on bytes (a stray carriage return is not a line break)."""
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _encode_file(processor, raw, out, threads, log, batch=20000):
    """Encode ``raw`` line by line into ``out`` in batches of lines, on ``threads`` threads."""
    done = 0
    with open(raw, encoding="utf-8") as fin, open(out, "w", encoding="utf-8") as fout:
        while True:
            lines = [line.rstrip("\n") for _, line in zip(range(batch), fin)]
            if not lines:
                break
            for pieces in processor.encode(lines, out_type=str, num_threads=threads):
                fout.write(" ".join(pieces) + "\n")
            done += len(lines)
            if done % (50 * batch) == 0:
                log(f"  {raw.name}: {done:,} lines encoded")


def train_and_encode(data_dir, src, tgt, vocab_size=8000, splits=SPLITS, log=print, threads=None):
    """Learn ``{data_dir}/spm.model`` (if absent) and encode the splits; return line counts."""
    import sentencepiece as spm

    data_dir = Path(data_dir)
    model_prefix = data_dir / "spm"
    model_path = data_dir / "spm.model"
    settings_path = data_dir / "spm.json"
    settings = {"vocab_size": vocab_size, "src": src, "tgt": tgt}
    if model_path.exists() and settings_path.exists():
        if json.loads(settings_path.read_text()) != settings:
            raise ValueError(
                f"{model_path} was learned with other settings "
                f"({settings_path.read_text().strip()}); remove it or use another folder"
            )
    else:
        inputs = [f"train.{lang}" for lang in (src, tgt)]
        log(f"learning a joint sentencepiece model ({vocab_size} pieces) on "
            f"{', '.join(str(data_dir / name) for name in inputs)}")  # fmt: skip
        # Relative paths from inside the folder, a fixed seed and a fixed thread count: the
        # same corpus gives a byte-identical spm.model on any machine.
        spm.set_random_generator_seed(TRAIN_SEED)
        cwd = os.getcwd()
        os.chdir(data_dir)
        try:
            spm.SentencePieceTrainer.train(
                input=",".join(inputs),
                model_prefix=model_prefix.name,
                vocab_size=vocab_size,
                character_coverage=1.0,
                model_type="unigram",
                input_sentence_size=2_000_000,
                shuffle_input_sentence=True,
                num_threads=TRAIN_THREADS,
                minloglevel=2,
            )
        finally:
            os.chdir(cwd)
        atomic.write_text(settings_path, json.dumps(settings) + "\n")
    processor = spm.SentencePieceProcessor(model_file=str(model_path))
    out_dir = data_dir / "spm"
    out_dir.mkdir(exist_ok=True)
    counts = {}
    for split in splits:
        for lang in (src, tgt):
            raw, encoded = data_dir / f"{split}.{lang}", out_dir / f"{split}.{lang}"
            if not raw.exists():
                raise FileNotFoundError(f"{raw} is missing; prepare the corpus first")
            if not encoded.exists() or encoded.stat().st_mtime < raw.stat().st_mtime:
                with atomic.replacing(encoded) as tmp:
                    _encode_file(processor, raw, tmp, threads or os.cpu_count() or 1, log)
            counts[f"spm/{split}.{lang}"] = line_count(encoded)
        if counts[f"spm/{split}.{src}"] != counts[f"spm/{split}.{tgt}"]:
            raise ValueError(
                f"{split}.{src} and {split}.{tgt} have different line counts "
                f"({counts[f'spm/{split}.{src}']} vs {counts[f'spm/{split}.{tgt}']})"
            )
    log(", ".join(f"{name} {n}" for name, n in counts.items()))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", required=True, help="folder with {train,valid,test}.{lang}")
    parser.add_argument("--src", required=True)
    parser.add_argument("--tgt", required=True)
    parser.add_argument("--vocab-size", type=positive_int, default=8000)
    args = parser.parse_args(argv)
    try:
        train_and_encode(args.data, args.src, args.tgt, args.vocab_size)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
