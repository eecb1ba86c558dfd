"""Evaluate a recipe run: average the last checkpoints, translate the test set, score it.

    python -m admin_fairseq.recipes.evaluate --run runs/wmt17-en-de/admin-18-18-8x4096

1. averages the last ``--avg-last`` epoch checkpoints (``checkpointN.pt``; our own averaging,
   fairseq's pip package does not ship ``average_checkpoints.py``) into ``averaged.pt``;
2. runs ``fairseq-generate`` with the published beam and length penalty (En-De beam 4,
   lenpen 0.6; En-Fr beam 5, lenpen 0.8) and sentencepiece decoding;
3. scores the detokenized output against the raw reference with sacreBLEU (BLEU and chrF, with
   signatures), and also reports the *tokenized* BLEU the papers print (Moses tokenizer on
   both sides, compound splitting for German as fairseq's ``compound_split_bleu.sh``). The two
   are not comparable with each other; the table labels them.

Results go to ``{run}/eval/{subset}.json`` (with the generate command) and are printed.
"""

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from admin_fairseq.evaluation import read_hypotheses, score
from admin_fairseq.recipes import RecipeError
from admin_fairseq.recipes.prepare import check_prepared
from admin_fairseq.recipes.train import _which

#: target language -> (beam, lenpen) of the published evaluations
PUBLISHED_DECODING = {"de": (4, 0.6), "fr": (5, 0.8)}
DEFAULT_DECODING = (5, 1.0)
_EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt$")
_UPDATE_CHECKPOINT = re.compile(r"checkpoint_(\d+)_(\d+)\.pt$")


def load_checkpoint(path):
    """``torch.load`` a fairseq checkpoint on the CPU, with a clear error for a bad file."""
    import torch

    import admin_fairseq  # noqa: F401  (allowlists what a fairseq checkpoint holds)
    from admin_fairseq.checkpoint_compat import explain_load_error

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, not a checkpoint at all ...
        explained = explain_load_error(path, err)
        raise RecipeError(
            str(explained) if explained is not None
            else f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:200]})"
        ) from err
    if not isinstance(state, dict) or "model" not in state:
        raise RecipeError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    return state


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
    import torch

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
    tmp = Path(out_path).with_suffix(".pt.tmp")
    torch.save(averaged, tmp)
    tmp.replace(out_path)
    return out_path


_COMPOUND = re.compile(r"(\S)-(\S)")


def tokenized_bleu(hypotheses, references, lang):
    """BLEU on Moses-tokenized text (``##AT##`` compound splitting for German), the number
    the papers report; returns ``(score, description)``."""
    import sacrebleu
    from sacremoses import MosesTokenizer

    tok = MosesTokenizer(lang=lang)

    def prep(line):
        text = tok.tokenize(line, escape=False, return_str=True)
        if lang == "de":
            # twice, so that overlapping matches such as "a-b-c" are all split
            text = _COMPOUND.sub(r"\1 ##AT##-##AT## \2", _COMPOUND.sub(r"\1 ##AT##-##AT## \2", text))
        return text

    hyps, refs = [prep(h) for h in hypotheses], [prep(r) for r in references]
    bleu = sacrebleu.metrics.BLEU(tokenize="none", force=True)
    value = bleu.corpus_score(hyps, [refs]).score
    how = "Moses-tokenized" + (", compound-split" if lang == "de" else "") + ", multi-bleu style"
    return value, how


def evaluate(run_dir, data_dir=None, avg_last=10, beam=None, lenpen=None, subset="test",
             max_tokens=8000, cpu=None, generate_args=(), log=print):  # fmt: skip
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    data_dir = Path(data_dir or info.get("data") or "")
    if not str(data_dir) or str(data_dir) == ".":
        raise RecipeError(f"{run_dir} has no run.json naming its data; pass --data")
    src, tgt = check_prepared(data_dir)
    cpu = info.get("cpu", False) if cpu is None else cpu
    default_beam, default_lenpen = PUBLISHED_DECODING.get(tgt, DEFAULT_DECODING)
    beam = beam or default_beam
    lenpen = default_lenpen if lenpen is None else lenpen

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
    result = subprocess.run(command, capture_output=True, text=True)
    (out_dir / f"generate-{subset}.txt").write_text(result.stdout)
    if result.returncode != 0:
        raise RecipeError(f"fairseq-generate failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    hypotheses = read_hypotheses(result.stdout.splitlines(), len(references))
    log(f"[eval 3/3] scoring ({time.time() - start:.0f} s to translate)")
    scores = score(hypotheses, references)
    tok_bleu, tok_how = tokenized_bleu(hypotheses, references, tgt)
    (out_dir / f"hypotheses-{subset}.{tgt}").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    record = {
        "subset": subset, "src": src, "tgt": tgt, **scores,
        "tokenized_bleu": tok_bleu, "tokenized_bleu_method": tok_how,
        "beam": beam, "lenpen": lenpen, "checkpoints": [p.name for p in checkpoints],
        "generate_command": shlex.join(command),
    }  # fmt: skip
    (out_dir / f"{subset}.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"[eval] {run_dir.name}: sacreBLEU {scores['bleu']:.2f} ({scores['bleu_signature']}), "
        f"chrF {scores['chrf']:.1f}, tokenized BLEU {tok_bleu:.2f} ({tok_how})")  # fmt: skip
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s --run DIR [options] [-- fairseq-generate flags]")
    parser.add_argument("--run", required=True, help="run folder written by the training step")
    parser.add_argument("--data", help="data folder (default: the one in {run}/run.json)")
    parser.add_argument("--avg-last", type=int, default=10, help="epoch checkpoints to average (10)")
    parser.add_argument("--beam", type=int, help="default: 4 for En-De, 5 for En-Fr, else 5")
    parser.add_argument("--lenpen", type=float, help="default: 0.6 for En-De, 0.8 for En-Fr, else 1")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--max-tokens", type=int, default=8000)
    parser.add_argument("--cpu", action="store_true", default=None, help="decode on the CPU")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    try:
        evaluate(args.run, args.data, args.avg_last, args.beam, args.lenpen, args.subset,
                 args.max_tokens, args.cpu, extra)  # fmt: skip
    except (RecipeError, ValueError) as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
