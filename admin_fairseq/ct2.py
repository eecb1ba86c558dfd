"""Convert a trained checkpoint into a CTranslate2 model folder, ready for fast translation.

    python -m admin_fairseq.ct2 --checkpoint outputs/main/runs/admin/checkpoint_last.pt \
        --out models/admin-ct2 [--quantization int8]

An Admin or DeepNet checkpoint is first rewritten as a plain fairseq ``transformer`` (the
exact fold of ``admin_fairseq.export``); a plain ``transformer`` checkpoint is converted as
it is. CTranslate2's own fairseq converter then writes the model, and the folder gets the
sentencepiece model of the training data and ``admin_fairseq.json`` (languages, where the
model came from, the fold's report), so that ``python -m admin_fairseq.translate --model
FOLDER`` needs nothing else. The folder appears only when everything has been written.

Needs the ``ctranslate2`` package (installed by the project's set-up; ``pip install
'admin-fairseq[ct2]'`` otherwise).
"""

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

from admin_fairseq import atomic, command, outputs
from admin_fairseq import checkpoints
from admin_fairseq.errors import UserError

QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                 "float16", "bfloat16")  # fmt: skip
RECORD = "admin_fairseq.json"


class DeployError(UserError, ValueError):
    """The model or its files cannot be used; the message names what is wrong."""


def read_checkpoint(path):
    """The checkpoint (mapped, not read into memory), its model settings (a Namespace) and its
    task settings (a dict), read by the project's one checkpoint reader."""
    from admin_fairseq.checkpoints import CheckpointError, read_settings

    try:
        return read_settings(path)
    except CheckpointError as err:
        raise DeployError(str(err)) from err


def model_kind(model):
    """'admin' for a transformer_admin* model (Admin, DeepNet, or a baseline it builds),
    'transformer' for a plain fairseq transformer; DeployError for anything else."""
    arch = str(getattr(model, "arch", ""))
    if arch.startswith("transformer_admin"):
        return "admin"
    import fairseq.models

    if fairseq.models.ARCH_MODEL_NAME_REGISTRY.get(arch) == "transformer":
        return "transformer"
    raise DeployError(f"the checkpoint holds a {arch!r} model; this command converts "
                      "transformer_admin* (Admin, DeepNet) and plain fairseq transformer models")  # fmt: skip


def data_files(model, task, checkpoint, data=None, spm_model=None):
    """``(bin_dir, src, tgt, spm_model)``: the dictionaries and the sentencepiece model the
    checkpoint was trained with (from its recorded data folder unless given), checked."""
    bin_dir = Path(data or task.get("data") or getattr(model, "data", "") or "")
    if not str(bin_dir) or str(bin_dir) == ".":
        raise DeployError(f"{checkpoint} records no data folder; pass --data (the binarised folder)")
    src = task.get("source_lang") or getattr(model, "source_lang", None)
    tgt = task.get("target_lang") or getattr(model, "target_lang", None)
    if not src or not tgt:  # fairseq infers them from the data folder's file names, as here
        pairs = {tuple(f.name.split(".")[1].split("-")) for f in bin_dir.glob("train.*-*.*.idx")}
        if not pairs and not list(bin_dir.glob("dict.*.txt")):
            raise DeployError(f"no dictionary (dict.*.txt) in {bin_dir}; pass --data (the folder "
                              "fairseq-preprocess wrote for this model)")  # fmt: skip
        if len(pairs) != 1:
            raise DeployError(f"{checkpoint} records no source/target language and {bin_dir} holds "
                              f"{len(pairs)} language pairs; pass --data with a folder of one pair")  # fmt: skip
        src, tgt = pairs.pop()
    for lang in (src, tgt):
        if not (bin_dir / f"dict.{lang}.txt").is_file():
            raise DeployError(f"dictionary {bin_dir / f'dict.{lang}.txt'} not found; pass --data "
                              "(the folder fairseq-preprocess wrote, holding dict.*.txt)")  # fmt: skip
    spm_path = Path(spm_model) if spm_model else bin_dir.parent / "spm.model"
    if not spm_path.is_file():
        raise DeployError(f"sentencepiece model {spm_path} not found; pass --spm (the model the "
                          "training data was encoded with)")  # fmt: skip
    return bin_dir, src, tgt, spm_path


def text_form_of(bin_dir):
    """The prepared corpus's text form (e.g. IWSLT'14's Moses-tokenized, lower-cased text),
    or None for raw text."""
    counts = Path(bin_dir).parent / "counts.json"
    if counts.is_file():
        return (json.loads(counts.read_text()).get("settings") or {}).get("text_form")
    return None


def _plain_checkpoint_for_converter(source, target):
    """CTranslate2's converter reads ``cfg["model"]`` as an argparse Namespace (fairseq's own
    form) with torch's weights_only loader: write the checkpoint that way."""
    import torch

    state = checkpoints.read(source)
    model = state["cfg"]["model"]
    state["cfg"]["model"] = Namespace(**model) if isinstance(model, dict) else model
    state["args"] = None
    torch.save(state, target)


def _check_out(out, force):
    """Refuse an --out that is a file, or a folder ct2 did not write (with --force, a ct2
    folder that holds anything ct2 did not put there); before anything is read or written."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DeployError(f"--out {out} is a file, not a folder; give the name of a folder to create")
    if not out.exists():
        return
    if not force:
        raise DeployError(f"{out} exists; choose another --out or pass --force to replace it")
    folder = outputs.Folder(out, "ct2")
    if not (out / outputs.MANIFEST).exists() or folder.written_by_other():
        raise DeployError(f"--force replaces only a folder that ct2 wrote, and {out} was not written by "
                          "ct2 (no record of its files); choose another --out")  # fmt: skip
    extra = folder.extra()
    if extra:
        raise DeployError(f"{out} holds {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}, which "
                          "ct2 did not write; move it away or choose another --out")  # fmt: skip


def convert(checkpoint, out, quantization="float32", data=None, spm_model=None, force=False, log=print):
    """Write the CTranslate2 model folder ``out``; return its record (a dict)."""
    import torch

    try:
        import ctranslate2
        from ctranslate2.converters import FairseqConverter
    except ImportError as err:
        raise DeployError("the ctranslate2 package is not installed: pip install ctranslate2 "
                          "(or re-run the project's set-up, scripts/setup_env.sh)") from err  # fmt: skip
    if quantization not in QUANTIZATIONS:
        raise DeployError(f"--quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}")
    out = Path(out)
    checkpoint = Path(checkpoint)
    _check_out(out, force)
    _, model, task = read_checkpoint(checkpoint)
    from admin_fairseq import plugin

    plugin.load()  # the export and the converter load the model through fairseq
    kind = model_kind(model)
    bin_dir, src, tgt, spm_path = data_files(model, task, checkpoint, data, spm_model)
    outputs.refuse_overlap([("--out", out)], [("--checkpoint", checkpoint), ("the data folder", bin_dir),
                                              ("the sentencepiece model", spm_path)])  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        record = {"source_lang": src, "target_lang": tgt, "sentencepiece": spm_path.name,
                  "text_form": text_form_of(bin_dir), "checkpoint": str(checkpoint.resolve()),
                  "quantization": quantization, "ctranslate2": ctranslate2.__version__,
                  "converted": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
        plain = work / "plain.pt"
        if kind == "admin":
            from admin_fairseq.export import ExportError, export_checkpoint

            log(f"[ct2 1/3] folding omega (if any): {checkpoint} -> a plain fairseq transformer")
            try:
                report = export_checkpoint(checkpoint, plain)
            except ExportError as err:
                raise DeployError(f"cannot export {checkpoint}: {err}") from err
            record["fold"] = {"sublayers": len(report.steps), "changes": report.changes,
                              "added_parameters": report.added_parameters}  # fmt: skip
            for line in report.changes:
                log(f"  changed: {line}")
        else:
            log("[ct2 1/3] a plain fairseq transformer: no fold needed")
            shutil.copyfile(checkpoint, plain)
        _plain_checkpoint_for_converter(plain, plain)
        log(f"[ct2 2/3] converting with CTranslate2 {ctranslate2.__version__} ({quantization})")
        torch.serialization.add_safe_globals([Namespace])
        logging.getLogger("fairseq").setLevel(logging.WARNING)
        model_dir = work / "model"
        FairseqConverter(str(plain), str(bin_dir), source_lang=src, target_lang=tgt).convert(
            str(model_dir), quantization=None if quantization == "float32" else quantization
        )  # fmt: skip
        shutil.copyfile(spm_path, model_dir / spm_path.name)
        atomic.write_json(model_dir / RECORD, record)
        outputs.Folder(model_dir, "ct2").adopt(sorted(p.name for p in model_dir.iterdir()))
        size = sum(f.stat().st_size for f in model_dir.iterdir())
        log(f"[ct2 3/3] {out}: model.bin, vocabularies, {spm_path.name}, {RECORD} ({size / 2**20:.1f} MiB)")
        if out.exists():
            shutil.rmtree(out)
        os.replace(model_dir, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="an Admin/DeepNet or plain transformer checkpoint")
    parser.add_argument("--out", required=True, help="the CTranslate2 model folder to write")
    parser.add_argument("--quantization", default="float32", choices=QUANTIZATIONS,
                        help="weight type of the converted model (default float32)")
    parser.add_argument("--data", help="binarised data folder with dict.*.txt (default: the "
                        "checkpoint's own)")  # fmt: skip
    parser.add_argument("--spm", help="sentencepiece model (default: spm.model next to the data folder)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    return command.run("ct2", convert, args.checkpoint, args.out, args.quantization, args.data, args.spm,
                       args.force, after_error="\nnothing was written.")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
