"""Evaluate a recipe run: average its checkpoints, translate the test set, score it.

    python -m admin_fairseq.recipes.evaluate --run runs/wmt17-en-de/admin-18-18-8x4096
    python -m admin_fairseq.recipes.evaluate --run RUN --avg-epochs 36-45

1. averages the epoch checkpoints of a window (``--avg-epochs FIRST-LAST``; default: the
   window the train step recorded in ``run.json``, which is the published one, e.g. epochs
   36-45 for the admin-torch recipes) or the last ``--avg-last N`` on disk, into
   ``averaged.pt`` (our own averaging: fairseq's pip package has no ``average_checkpoints.py``);
2. runs ``fairseq-generate`` with the published beam and length penalty (En-De beam 4,
   lenpen 0.6; En-Fr beam 5, lenpen 0.8) and sentencepiece decoding;
3. scores the detokenized output against the raw reference with sacreBLEU (BLEU and chrF, with
   signatures: the headline numbers), and also the *tokenized BLEU* the papers print, computed
   as they did: both sides Moses-tokenized with aggressive hyphen splitting (``-a``), for
   German one ``##AT##`` compound-splitting pass (fairseq's ``compound_split_bleu.sh``),
   then BLEU-4 on whitespace tokens by fairseq's own scorer (``fairseq-score``). The two
   are not comparable with each other; the output labels them.

Results go to ``{run}/eval/{subset}.json`` (with the generate command) and are printed.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from admin_fairseq import atomic, command
from admin_fairseq.evaluation import read_hypotheses, score
from admin_fairseq.recipes import RecipeError
from admin_fairseq.recipes.prepare import check_prepared
from admin_fairseq.recipes.record import RunRecord
from admin_fairseq.recipes.plan import _which
from admin_fairseq.errors import UserError
from admin_fairseq.argtypes import finite_float, positive_int

#: target language -> (beam, lenpen) of the published evaluations
PUBLISHED_DECODING = {"de": (4, 0.6), "fr": (5, 0.8)}
DEFAULT_DECODING = (5, 1.0)
_EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt$")
_UPDATE_CHECKPOINT = re.compile(r"checkpoint_(\d+)_(\d+)\.pt$")


def load_checkpoint(path):
    """A fairseq checkpoint on the CPU, read by the project's one checkpoint reader."""
    from admin_fairseq.checkpoints import CheckpointError, read

    try:
        state = read(path)
    except CheckpointError as err:
        raise RecipeError(str(err)) from err
    if not isinstance(state, dict) or "model" not in state:
        raise RecipeError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    return state


def window_checkpoints(run_dir, window):
    """``checkpoint{FIRST..LAST}.pt`` of ``run_dir``; RecipeError naming the missing epochs."""
    first, last = window
    paths = [Path(run_dir) / f"checkpoint{epoch}.pt" for epoch in range(first, last + 1)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        have = sorted(int(m.group(1)) for p in Path(run_dir).glob("checkpoint*.pt")
                      if (m := _EPOCH_CHECKPOINT.search(p.name)))  # fmt: skip
        on_disk = f"epochs {have[0]}-{have[-1]}" if have else "no epoch checkpoints"
        raise RecipeError(
            f"--avg-epochs {first}-{last}: {run_dir} lacks {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} (it has {on_disk}). Train until epoch {last} "
            f"with the train step's --avg-epochs {first}-{last} (it keeps those epochs), or "
            "average another window"
        )
    return paths


def epoch_checkpoints(run_dir):
    """The run's epoch checkpoints (``checkpointN.pt``), oldest first; when it has none (a
    run shorter than an epoch), its update checkpoints (``checkpoint_E_U.pt``)."""
    epochs, updates = [], []
    for path in Path(run_dir).glob("checkpoint*.pt"):
        match = _EPOCH_CHECKPOINT.search(path.name)
        if match:
            epochs.append((int(match.group(1)), path))
        match = _UPDATE_CHECKPOINT.search(path.name)
        if match:
            updates.append((int(match.group(2)), path))
    return [path for _, path in sorted(epochs or updates)]


def average_checkpoints(paths, out_path):
    """Average the float model parameters of ``paths`` (in float64) into ``out_path``.

    Every checkpoint must hold the same tensors with the same shapes. Non-float tensors
    (counters, flags) and everything outside the model come from the last checkpoint; the
    optimizer state is dropped. Written under a temporary name and renamed.
    """

    total, reference = None, None
    for path in paths:
        state = load_checkpoint(path)
        model = state["model"]
        if total is None:
            reference, total = path, {k: v.double() for k, v in model.items() if v.is_floating_point()}
            keys = set(model)
        else:
            if set(model) != keys:
                diff = sorted(set(model) ^ keys)[:5]
                raise RecipeError(f"{path} and {reference} hold different parameters ({diff}); "
                                  "they are not checkpoints of the same model")  # fmt: skip
            for name in total:
                if model[name].shape != total[name].shape:
                    raise RecipeError(
                        f"{name} has shape {tuple(model[name].shape)} in {path} but "
                        f"{tuple(total[name].shape)} in {reference}"
                    )
                total[name] += model[name].double()
        last = state
    averaged = dict(last)
    averaged["model"] = {
        k: (total[k] / len(paths)).to(v.dtype) if k in total else v for k, v in last["model"].items()
    }
    averaged["last_optimizer_state"] = None
    averaged["averaged_from"] = [str(p) for p in paths]
    atomic.torch_save(averaged, out_path)
    return out_path


_COMPOUND = re.compile(r"(\S)-(\S)")


TOKENIZED_BLEU = ("tokenized BLEU: Moses tokenizer -a (aggressive hyphen splitting){split}, "
                  "BLEU-4 on whitespace tokens (fairseq-score), as the papers")


def paper_tokenize(line, lang, tokenizer=None):
    """One line as the papers scored it: Moses-tokenized as fairseq's WMT preparation does
    (``tokenizer.perl -a -l LANG``: aggressive hyphen splitting, special characters escaped),
    and for German one pass of ``compound_split_bleu.sh``'s ``s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g``."""
    from sacremoses import MosesTokenizer

    tokenizer = tokenizer or MosesTokenizer(lang=lang)
    text = tokenizer.tokenize(line, aggressive_dash_splits=True, escape=True, return_str=True)
    if lang == "de":
        text = _COMPOUND.sub(r"\1 ##AT##-##AT## \2", text)  # one pass, as the perl one-liner
    return text


def fairseq_bleu(hypotheses, references, order=4):
    """Corpus BLEU of already tokenized lines, computed by fairseq's scorer exactly as
    ``fairseq-score`` does (whitespace tokens, a fresh dictionary, no smoothing)."""
    from admin_fairseq.plugin import _import_fairseq_quietly

    _import_fairseq_quietly()  # fairseq's first import would turn on DEBUG logging program-wide
    from fairseq.data import dictionary
    from fairseq.scoring import bleu

    vocab = dictionary.Dictionary()
    scorer = bleu.Scorer(bleu.BleuConfig(pad=vocab.pad(), eos=vocab.eos(), unk=vocab.unk()))
    for hyp, ref in zip(hypotheses, references):
        scorer.add(vocab.encode_line(ref), vocab.encode_line(hyp))
    return scorer.score(order)


#: corpora whose published evaluation normalised the reference before tokenising it:
#: Transformer-Clinic's WMT'14 En-Fr scripts turn the typographic apostrophe into ``'``
REFERENCE_NORMALISATION = {"wmt14-en-fr": {"\u2019": "'"}}


def normalise_reference(line, corpus):
    """``line`` as the published evaluation of ``corpus`` fed it to the tokenizer."""
    for old, new in REFERENCE_NORMALISATION.get(corpus, {}).items():
        line = line.replace(old, new)
    return line


def tokenized_bleu(hypotheses, references, lang, corpus=None):
    """The tokenized BLEU the papers report; returns ``(score, description)``. ``corpus``
    (the prepared corpus' name) applies its published reference normalisation."""
    from sacremoses import MosesTokenizer

    tokenizer = MosesTokenizer(lang=lang)
    hyps = [paper_tokenize(h, lang, tokenizer) for h in hypotheses]
    refs = [paper_tokenize(normalise_reference(r, corpus), lang, tokenizer) for r in references]
    how = TOKENIZED_BLEU.format(split=", one ##AT## compound-splitting pass" if lang == "de" else "")
    if corpus in REFERENCE_NORMALISATION:
        how = how.replace("tokenized BLEU: ", "tokenized BLEU: reference apostrophes U+2019 -> ' "
                          "(Transformer-Clinic's En-Fr evaluation), ", 1)  # fmt: skip
    return fairseq_bleu(hyps, refs), how


def prepared_settings(data_dir):
    """The settings the prepare step recorded in ``counts.json`` ({} when there is none)."""
    counts = Path(data_dir) / "counts.json"
    if not counts.exists():
        return {}
    return json.loads(counts.read_text()).get("settings") or {}


def prepared_text_form(data_dir):
    """How the prepare step wrote the text (e.g. "moses-tokenized, lower-cased" for IWSLT'14),
    or None for raw text."""
    return prepared_settings(data_dir).get("text_form")


def evaluate(run_dir, data_dir=None, avg_last=None, beam=None, lenpen=None, subset="test",
             max_tokens=8000, cpu=None, generate_args=(), log=print, avg_epochs=None,
             env_extra=None):  # fmt: skip
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RecipeError(f"--run {run_dir} is not a folder: give the run folder the train step "
                          "wrote (its --save-dir, by default runs/{data}/{method}-{E}-{D}-{batch})")  # fmt: skip
    record = RunRecord.read_if_any(run_dir)
    run_started = record.started if record else None  # which run of the folder is scored
    data_dir = Path(data_dir or (record.data if record else ""))
    if not str(data_dir) or str(data_dir) == ".":
        raise RecipeError(f"{run_dir} has no run.json naming its data; pass --data")
    src, tgt = check_prepared(data_dir)
    cpu = (record.cpu if record else False) if cpu is None else cpu
    default_beam, default_lenpen = PUBLISHED_DECODING.get(tgt, DEFAULT_DECODING)
    beam = beam or default_beam
    lenpen = default_lenpen if lenpen is None else lenpen

    if avg_epochs is None and avg_last is None:
        avg_epochs = (record.avg_epochs or None) if record else None  # the window the train step kept
        if avg_epochs and not (run_dir / f"checkpoint{avg_epochs.split('-')[1]}.pt").exists():
            if not list(run_dir.glob("checkpoint[0-9]*.pt")):
                avg_epochs = None  # a run saved by updates only: fall back to the last ones
    if avg_epochs is not None:
        from admin_fairseq.recipes.plan import parse_window

        window = parse_window(avg_epochs) if isinstance(avg_epochs, str) else tuple(avg_epochs)
        checkpoints = window_checkpoints(run_dir, window)
    else:
        avg_last = 10 if avg_last is None else avg_last
        checkpoints = epoch_checkpoints(run_dir)[-avg_last:] if avg_last > 0 else []
    if not checkpoints:
        last = run_dir / "checkpoint_last.pt"
        if not last.exists():
            raise RecipeError(f"{run_dir} has no checkpoints; train first")
        checkpoints = [last]
        log(f"[eval] no epoch checkpoints in {run_dir}; using {last.name} alone")
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    model_path = out_dir / "averaged.pt"
    log(f"[eval 1/3] averaging {len(checkpoints)} checkpoint(s): {', '.join(p.name for p in checkpoints)}")
    average_checkpoints(checkpoints, model_path)

    references = (data_dir / f"{subset}.{tgt}").read_text(encoding="utf-8").splitlines()
    command = [
        _which("fairseq-generate"), str(data_dir / "bin"), "--user-dir",
        str(Path(__file__).resolve().parents[1]), "--path", str(model_path), "--gen-subset", subset,
        "--beam", str(beam), "--lenpen", str(lenpen), "--remove-bpe", "sentencepiece",
        "--max-tokens", str(max_tokens), "--required-batch-size-multiple", "1",
    ]  # fmt: skip
    command += ["--cpu"] if cpu else ["--fp16"]
    command += list(generate_args)
    log(f"[eval 2/3] translating {len(references):,} {subset} sentences (beam {beam}, lenpen {lenpen})")
    start = time.time()
    env = dict(os.environ, **(env_extra or {}))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    atomic.write_text(out_dir / f"generate-{subset}.txt", result.stdout)
    if result.returncode != 0:
        raise RecipeError(f"fairseq-generate failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    hypotheses = read_hypotheses(result.stdout.splitlines(), len(references))
    log(f"[eval 3/3] scoring ({time.time() - start:.0f} s to translate)")
    scores = score(hypotheses, references)
    text_form = prepared_text_form(data_dir)
    if text_form:  # already tokenized (IWSLT'14): score the text as it is, as fairseq-generate does
        tok_bleu = fairseq_bleu(hypotheses, references)
        tok_how = f"tokenized BLEU: BLEU-4 on the text as prepared ({text_form}), fairseq-score"
    else:
        tok_bleu, tok_how = tokenized_bleu(hypotheses, references, tgt, prepared_settings(data_dir).get("corpus"))
    atomic.write_text(out_dir / f"hypotheses-{subset}.{tgt}", "\n".join(hypotheses) + "\n")
    record = {
        "subset": subset, "src": src, "tgt": tgt, **scores,
        "tokenized_bleu": tok_bleu, "tokenized_bleu_method": tok_how, "text_form": text_form,
        "beam": beam, "lenpen": lenpen, "checkpoints": [p.name for p in checkpoints],
        "averaging": f"epochs {avg_epochs}" if avg_epochs else f"last {len(checkpoints)} on disk",
        "generate_command": shlex.join(command), "run_started": run_started,
    }  # fmt: skip
    atomic.write_json(out_dir / f"{subset}.json", record)
    log(f"[eval] {run_dir.name}: sacreBLEU {scores['bleu']:.2f} ({scores['bleu_signature']}), "
        f"chrF {scores['chrf']:.1f}; {tok_how}: {tok_bleu:.2f}")  # fmt: skip
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     usage="%(prog)s --run DIR [options] [-- fairseq-generate flags]")
    parser.add_argument("--run", required=True, help="run folder written by the training step")
    parser.add_argument("--data", help="data folder (default: the one in {run}/run.json)")
    parser.add_argument("--avg-epochs", help="FIRST-LAST: average these epoch checkpoints "
                        "(default: the window in the run's run.json, the published one)")
    parser.add_argument("--avg-last", type=positive_int, help="average the last N checkpoints on disk "
                        "instead (epoch checkpoints, else update checkpoints)")
    parser.add_argument("--beam", type=positive_int, help="default: 4 for En-De, 5 for En-Fr, else 5")
    parser.add_argument("--lenpen", type=finite_float, help="default: 0.6 for En-De, 0.8 for En-Fr, else 1")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--max-tokens", type=positive_int, default=8000)
    parser.add_argument("--cpu", action="store_true", default=None, help="decode on the CPU")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)

    def body():
        if args.avg_epochs and args.avg_last is not None:
            raise RecipeError("--avg-epochs and --avg-last choose the checkpoints two ways; give one")
        evaluate(args.run, args.data, args.avg_last, args.beam, args.lenpen, args.subset,
                 args.max_tokens, args.cpu, extra, avg_epochs=args.avg_epochs)  # fmt: skip

    return command.run("evaluate", body, errors=(UserError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
