"""The disk a recipe run's folder needs at its fullest, for each published setting and depth.

    python scripts/disk_peak.py --out results/disk_peak

Each row is what the train step's own disk check computes before a run starts
(``admin_fairseq.recipes.plan.check_disk``): the model built on torch's ``meta`` device with
the run's exact flags over a joined vocabulary of the corpus's size (WMT'17 En-De 32,000,
WMT'14 En-Fr 40,000, IWSLT'14 10,000 pieces), 12 bytes per parameter for one checkpoint
(fp32 weights and Adam's two moments), and the most checkpoints the folder holds at once
(``plan.disk_peak``): the epochs of the averaging window, the latest interval checkpoint,
``checkpoint_last.pt`` and ``checkpoint_best.pt``, the new checkpoint written before the
oldest is deleted, and the temporary file of a copy.
"""

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admin_fairseq import atomic  # noqa: E402
from admin_fairseq.recipes import plan  # noqa: E402

#: (corpus, vocabulary, batch setting, GPUs, depths); the GPUs change no size
SETTINGS = [
    ("wmt17-en-de", 32000, "8x4096", 8, ["6-6", "18-18", "60-12", "100-100"]),
    ("wmt17-en-de", 32000, "128x4096", 8, ["6-6", "18-18", "60-12", "100-100"]),
    ("wmt14-en-fr", 40000, "80x8000", 8, ["6-6"]),
    ("wmt14-en-fr", 40000, "256x5000", 16, ["60-12"]),
    ("iwslt14-de-en", 10000, "1x4096", 1, ["6-6"]),
]


def rows():
    out = []
    with tempfile.TemporaryDirectory() as folder:
        for corpus, vocab, batch, gpus, depths in SETTINGS:
            data = Path(folder) / corpus
            (data / "bin").mkdir(parents=True, exist_ok=True)
            words = "".join(f"w{i} 1\n" for i in range(vocab - 4))  # + fairseq's 4 special symbols
            src, tgt = corpus.split("-")[1:]
            for lang in (src, tgt):
                (data / "bin" / f"dict.{lang}.txt").write_text(words)
            (data / "bin" / f"train.{src}-{tgt}.{src}.idx").write_bytes(b"")  # names the pair for fairseq
            for depth in depths:
                settings = plan.RunSettings(data=data, method="admin", depth=depth, batch=batch, gpus=gpus,
                                            save_dir=Path(folder) / "run")  # fmt: skip
                _, record = plan.build(settings, env={})
                params, one = plan.checkpoint_bytes(record)
                peak = plan.disk_peak(record.fairseq_flags)
                out.append({"corpus": corpus, "batch": batch, "depth": depth, "parameters": params,
                            "checkpoint": one, "peak": peak, "count": plan.peak_count(peak)})  # fmt: skip
    return out


def markdown(table):
    gb = 1e9
    head = ["corpus", "`--batch`", "depth", "parameters", "one checkpoint (GB)", "epochs kept",
            "at the fullest (checkpoints)", "at the fullest (GB)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        lines.append(f"| {r['corpus']} | {r['batch']} | {r['depth']} | {r['parameters'] / 1e6:.0f}M | "
                     f"{r['checkpoint'] / gb:.2f} | {r['peak']['epochs kept']} | {r['count']:g} | "
                     f"{r['checkpoint'] * r['count'] / gb:.0f} |")  # fmt: skip
    lines += ["", "Computed by `python scripts/disk_peak.py` with the train step's own disk check "
              "(Admin, vector omegas, shared embeddings, the recipe's settings). At the fullest: the "
              "averaging window's epochs, the latest interval checkpoint, `checkpoint_last.pt`, "
              "`checkpoint_best.pt`, the new checkpoint before the oldest goes, and a copy's temporary "
              "file. The evaluate step's `averaged.pt` (weights only, a third of a checkpoint) comes "
              "after training, when the last two are gone."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results/disk_peak", help="folder for table.md")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")  # hydra's deprecation notes, once per model built
    table = markdown(rows())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic.write_text(Path(args.out) / "table.md", table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
