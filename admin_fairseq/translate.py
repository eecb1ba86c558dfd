"""Translate raw text with a trained model: one sentence per line in, one translation per line out.

    python -m admin_fairseq.translate --model models/admin-ct2 < input.en > output.fr
    python -m admin_fairseq.translate --model outputs/main/runs/admin/checkpoint_last.pt \
        --beam 4 < input.en > output.fr

``--model`` is either a CTranslate2 model folder written by ``python -m admin_fairseq.ct2``
or a fairseq checkpoint (Admin, DeepNet, a baseline, or an exported plain transformer),
which is run with fairseq's own beam search. The sentencepiece model is applied to the
input and removed from the output; the order of the lines is kept and an empty line gives
an empty line. The defaults are fairseq-generate's (beam 5, length penalty 1, at most
``0 * source length + 200`` tokens), so both kinds of model translate alike. A CTranslate2
model translates one batch per thread, ``--threads`` batches at a time (the fastest split
for translating files on the CPUs measured in docs/deployment.md; ``--intra-threads`` gives
each batch more threads). Progress goes to stderr when the input is long.

From Python, :func:`load` gives the same model with a ``translate`` method.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from admin_fairseq.ct2 import RECORD, DeployError, data_files, model_kind, read_checkpoint, text_form_of
from admin_fairseq.errors import UserError
from admin_fairseq.argtypes import finite_float, nonnegative_float, nonnegative_int, positive_int

PROGRESS_EVERY = 5.0  # seconds between progress lines on stderr


def read_lines(stream, name="<stdin>"):
    """Lines of a byte stream as text, line ends (LF or CRLF) removed; DeployError naming the
    line and its bytes when one is not UTF-8."""
    lines = []
    for number, raw in enumerate(stream, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw.rstrip(b"\r\n")[max(err.start - 8, 0):err.end + 8]
            raise DeployError(f"{name} line {number} is not UTF-8 (bytes {bad!r} at byte "
                              f"{err.start}); convert the input to UTF-8 first") from err  # fmt: skip
        lines.append(text.rstrip("\r\n"))
    return lines


class Pieces:
    """Sentencepiece in both directions, plus the text form a corpus was prepared in."""

    def __init__(self, spm_path, text_form=None, lang=None):
        import sentencepiece

        self.processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
        self.text_form = text_form
        self.tokenizer = None
        if text_form:  # e.g. IWSLT'14: the model reads Moses-tokenized, lower-cased text
            from sacremoses import MosesTokenizer

            self.tokenizer = MosesTokenizer(lang=lang)

    def encode(self, line):
        if self.tokenizer is not None:
            line = self.tokenizer.tokenize(line, escape=True, return_str=True).lower()
        return self.processor.encode(line, out_type=str)

    def decode(self, pieces):
        return self.processor.decode(pieces)


class Ct2Model:
    """A CTranslate2 folder. ``threads`` CPU threads in all: ``threads // intra_threads``
    batches are translated at the same time, each with ``intra_threads`` threads."""

    def __init__(self, folder, beam, lenpen, max_len_a, max_len_b, threads, compute_type, intra_threads=1):
        import ctranslate2

        folder = Path(folder)
        record_path = folder / RECORD
        if not (folder / "model.bin").is_file() or not record_path.is_file():
            raise DeployError(f"{folder} is not a CTranslate2 model folder written by "
                              f"admin_fairseq.ct2 (it needs model.bin and {RECORD})")  # fmt: skip
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            spm_path = folder / record["sentencepiece"]
            record["source_lang"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            raise DeployError(f"{record_path} is not the record admin_fairseq.ct2 writes ({type(err).__name__}: "
                              f"{err}); convert the checkpoint again") from None  # fmt: skip
        if not spm_path.is_file():
            raise DeployError(f"sentencepiece model {spm_path} is missing from the model folder")
        if not 1 <= intra_threads <= threads:
            raise DeployError(f"--intra-threads {intra_threads} must be between 1 and --threads ({threads})")
        self.pieces = Pieces(spm_path, record.get("text_form"), record["source_lang"])
        self.parallel = threads // intra_threads
        try:
            self.translator = ctranslate2.Translator(str(folder), device="cpu", compute_type=compute_type,
                                                     inter_threads=self.parallel,
                                                     intra_threads=intra_threads)  # fmt: skip
        except (RuntimeError, ValueError) as err:
            raise DeployError(f"CTranslate2 cannot load {folder} ({err}); the folder is damaged or "
                              "from another version: convert the checkpoint again") from None  # fmt: skip
        self.beam, self.lenpen, self.max_len_a, self.max_len_b = beam, lenpen, max_len_a, max_len_b
        self.describe = (f"CTranslate2 {ctranslate2.__version__} ({compute_type}, {self.parallel} batch(es) "
                         f"at a time x {intra_threads} thread(s)) {folder}")  # fmt: skip

    def _submit(self, batch):
        longest = max(len(p) for p in batch) + 1  # fairseq counts the source's eos
        return self.translator.translate_batch(
            batch, beam_size=self.beam, length_penalty=self.lenpen, max_batch_size=len(batch),
            max_decoding_length=int(self.max_len_a * longest + self.max_len_b),
            min_decoding_length=1,  # fairseq's min_len: no empty translation
            asynchronous=True,
        )  # fmt: skip

    def translate_batches(self, batches):
        """Translations of each batch, in order; up to twice ``parallel`` batches are queued
        so that every worker has the next one ready."""
        pending = []
        for batch in batches:
            pending.append(self._submit(batch))
            if len(pending) > 2 * self.parallel:
                yield [r.result().hypotheses[0] for r in pending.pop(0)]
        for futures in pending:
            yield [r.result().hypotheses[0] for r in futures]


class FairseqModel:
    def __init__(self, path, beam, lenpen, max_len_a, max_len_b, threads, data=None, spm_model=None):
        import torch

        from admin_fairseq import plugin

        plugin.load()  # an Admin checkpoint needs transformer_admin registered
        from fairseq import checkpoint_utils

        _, model_args, task_args = read_checkpoint(path)
        model_kind(model_args)  # refuses what is neither an Admin model nor a plain transformer
        bin_dir, src, tgt, spm_path = data_files(model_args, task_args, path, data, spm_model)
        # importing admin_fairseq (done above) has registered the plugin's models
        if threads:
            torch.set_num_threads(threads)
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [str(path)], arg_overrides={"data": str(bin_dir)}
        )  # fmt: skip
        self.model = models[0].eval()
        self.task = task
        self.src_dict, self.tgt_dict = task.source_dictionary, task.target_dictionary
        gen_args = argparse.Namespace(beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b)
        self.generator = task.build_generator([self.model], gen_args)
        self.pieces = Pieces(spm_path, text_form_of(bin_dir), src)
        self.describe = f"fairseq (beam search of fairseq-generate) {path}"

    def translate_batches(self, batches):
        for batch in batches:
            yield self._translate(batch)

    def _translate(self, batch):
        import torch

        tokens = [self.src_dict.encode_line(" ".join(p), add_if_not_exist=False, append_eos=True).long()
                  for p in batch]  # fmt: skip
        lengths = torch.tensor([len(t) for t in tokens])
        dataset = self.task.build_dataset_for_inference(tokens, lengths.tolist())
        sample = dataset.collater([dataset[i] for i in range(len(tokens))])
        with torch.no_grad():
            out = self.task.inference_step(self.generator, [self.model], sample)
        hyps = [None] * len(batch)
        for k, sample_id in enumerate(sample["id"].tolist()):
            best = out[k][0]["tokens"]
            text = self.tgt_dict.string(best)  # pieces joined by spaces, eos removed
            hyps[sample_id] = text.split()
        return hyps


#: translate works through the input this many batches at a time: each window's sentences
#: are batched by length (as fairseq-generate batches them), and its translations are given
#: back in input order before the next window starts, so that output streams as it goes
WINDOW_BATCHES = 16


def iter_translations(model, lines, batch_size, log=None):
    """Translations of ``lines``, yielded in order, window by window (:data:`WINDOW_BATCHES`);
    empty lines stay empty."""
    window = batch_size * WINDOW_BATCHES
    total = sum(1 for line in lines if line.strip())
    start = last_report = time.time()
    done = 0
    for first in range(0, len(lines), window):
        part = lines[first:first + window]
        encoded = [(i, model.pieces.encode(line)) for i, line in enumerate(part) if line.strip()]
        order = sorted(encoded, key=lambda item: len(item[1]))
        out = [""] * len(part)
        chunks = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
        for chunk, hyps in zip(chunks, model.translate_batches([[p for _, p in chunk] for chunk in chunks])):
            for (i, _), pieces in zip(chunk, hyps):
                out[i] = model.pieces.decode(pieces)
        done += len(order)
        yield from out
        if log is not None and time.time() - last_report >= PROGRESS_EVERY and done < total:
            last_report = time.time()
            rate = done / (last_report - start)
            log(f"[translate] {done:,}/{total:,} sentences, {rate:.1f}/s, "
                f"~{(total - done) / rate:.0f} s left")  # fmt: skip


def translate_lines(model, lines, batch_size, log=None):
    """Translations of ``lines`` in order (:func:`iter_translations`), as a list."""
    return list(iter_translations(model, lines, batch_size, log))


def load_model(args):
    path = Path(args.model)
    if path.is_dir():
        return Ct2Model(path, args.beam, args.lenpen, args.max_len_a, args.max_len_b,
                        args.threads or os.cpu_count() or 1, args.compute_type, args.intra_threads)  # fmt: skip
    if path.is_file():
        for flag, value, default in (("--compute-type", args.compute_type, "default"),
                                     ("--intra-threads", args.intra_threads, 1)):
            if value != default:
                raise DeployError(f"{flag} applies to CTranslate2 model folders, not to checkpoints")
        return FairseqModel(path, args.beam, args.lenpen, args.max_len_a, args.max_len_b, args.threads,
                            args.data, args.spm)  # fmt: skip
    raise DeployError(f"--model {path} does not exist (a CTranslate2 folder or a checkpoint file)")


#: CTranslate2's compute types (``default``: the type the model was converted to)
COMPUTE_TYPES = ("default", "auto", "float32", "float16", "bfloat16", "int8", "int8_float32",
                 "int8_float16", "int8_bfloat16", "int16")  # fmt: skip


class Translator:
    """A trained model for translating from Python; made by :func:`load`."""

    def __init__(self, model, batch_size):
        self.model, self.batch_size = model, batch_size

    def translate(self, sentences):
        """The translation of one raw sentence (a ``str``), or of each of a list of them, in
        order; an empty sentence gives an empty translation."""
        if isinstance(sentences, str):
            return self.translate([sentences])[0]
        lines = list(sentences)
        for k, line in enumerate(lines):
            if not isinstance(line, str) or "\n" in line:
                raise DeployError(f"sentence {k} is not one line of text: {line!r}")
        return translate_lines(self.model, lines, self.batch_size)


def load(model, *, data=None, spm=None, beam=5, lenpen=1.0, max_len_a=0.0, max_len_b=200,
         batch_size=64, threads=0, compute_type="default", intra_threads=1):  # fmt: skip
    """A :class:`Translator` for ``model``: a CTranslate2 folder (``python -m admin_fairseq.ct2``)
    or a fairseq checkpoint (Admin, DeepNet, a baseline, an exported plain transformer; its
    data folder and sentencepiece model are found as the translate command finds them, or
    given as ``data`` and ``spm``). The options are the translate command's, with its
    defaults (fairseq-generate's)::

        from admin_fairseq.translate import load
        model = load("outputs/main/runs/admin/checkpoint_last.pt", beam=4)
        model.translate("In the beginning was the Word.")
    """
    options = argparse.Namespace(model=model, data=data, spm=spm, beam=beam, lenpen=lenpen,
                                 max_len_a=max_len_a, max_len_b=max_len_b, threads=threads,
                                 compute_type=compute_type, intra_threads=intra_threads)  # fmt: skip
    if beam < 1 or batch_size < 1:
        raise DeployError("beam and batch_size must be 1 or more")
    return Translator(load_model(options), batch_size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", required=True, help="CTranslate2 model folder or fairseq checkpoint")
    parser.add_argument("--beam", type=positive_int, default=5, help="beam size (default 5)")
    parser.add_argument("--lenpen", type=finite_float, default=1.0, help="length penalty (default 1)")
    parser.add_argument("--max-len-a", type=nonnegative_float, default=0.0, help="longest output: a * source length + b")
    parser.add_argument("--max-len-b", type=nonnegative_int, default=200)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="sentences per batch (default 64)")
    parser.add_argument("--threads", type=nonnegative_int, default=0, help="CPU threads (default: all cores)")
    parser.add_argument("--intra-threads", type=positive_int, default=1,
                        help="CTranslate2 folders: threads per batch; --threads / this many batches are "
                        "translated at the same time (default 1: one batch per thread)")
    parser.add_argument("--compute-type", default="default", choices=COMPUTE_TYPES, metavar="TYPE",
                        help="CTranslate2 folders: default (the type converted to), or one of "
                        f"{', '.join(COMPUTE_TYPES[1:])}")  # fmt: skip
    parser.add_argument("--data", help="checkpoints: binarised data folder (default: the checkpoint's)")
    parser.add_argument("--spm", help="checkpoints: sentencepiece model (default: next to the data)")
    parser.add_argument("--input", help="read this file instead of stdin")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.beam < 1 or args.batch_size < 1:
        parser.exit(2, "translate: error: --beam and --batch-size must be 1 or more\n")
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    written = 0
    try:
        if args.input:
            with open(args.input, "rb") as f:
                lines = read_lines(f, args.input)
        else:
            lines = read_lines(sys.stdin.buffer)
        start = time.time()
        model = load_model(args)
        loaded = time.time()
        for translation in iter_translations(model, lines, args.batch_size, log):
            sys.stdout.write(translation + "\n")
            written += 1
            if written % (args.batch_size * WINDOW_BATCHES) == 0:
                sys.stdout.flush()
        sys.stdout.flush()
    except UserError as err:
        print(f"translate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(f"translate: interrupted; the first {written:,} translations "
              "were written, in input order", file=sys.stderr)  # fmt: skip
        return 130
    except BrokenPipeError:  # the reader of the output stopped (| head): end quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    if log is not None:
        log(f"[translate] {len(lines):,} lines with {model.describe}: model loaded in "
            f"{loaded - start:.1f} s, translated in {time.time() - loaded:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
