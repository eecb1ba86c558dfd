"""Parameters, and the GPU memory their training state takes, for every architecture preset.

    python scripts/preset_sizes.py --out results/preset_sizes

Each preset is built as fairseq-train builds it (``build_from_flags``; Admin with trainable
vector omegas and shared embeddings, as in the recipes) on torch's ``meta`` device, which
gives every shape without allocating memory, over a joined vocabulary of ``--vocab`` words
(32,000 by default, the WMT'17 En-De recipe's). The memory columns are computed, not
measured: bytes per parameter of the state the optimizer keeps, for each way the recipes
train, plus the checkpoint file fairseq writes. Activations come on top and depend on the
batch (``--max-tokens``) and ``--checkpoint-activations``; no GPU was at hand to measure them.
"""

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from admin_fairseq import atomic  # noqa: E402
from admin_fairseq.build import build_from_flags  # noqa: E402
from admin_fairseq.recipes.plan import CHECKPOINT_BYTES_PER_PARAMETER  # noqa: E402
from admin_fairseq.argtypes import positive_int  # noqa: E402

PRESETS = [
    "transformer_admin_tiny", "transformer_admin_iwslt_de_en", "transformer_admin",
    "transformer_admin_wmt_en_de", "transformer_admin_18_18", "transformer_admin_60_12",
    "transformer_admin_100_100", "transformer_admin_vaswani_wmt_en_de_big",
    "transformer_admin_vaswani_wmt_en_fr_big",
]  # fmt: skip
#: bytes per parameter of the training state, by precision (Adam or RAdam: two fp32 moments)
STATE_BYTES = {
    # fp32 weights 4 + fp32 gradients 4 + moments 8
    "fp32": 16,
    # fairseq's FP16Optimizer (--fp16): fp16 weights 2 + fp16 gradients 2 + fp32 master
    # weights 4 + fp32 master gradients 4 + moments 8
    "--fp16": 20,
    # --memory-efficient-fp16: fp16 weights 2 + fp16 gradients 2 + moments 8
    "--memory-efficient-fp16": 12,
}


def parameters(arch, vocab, device="meta"):
    """``(parameters, encoder layers, decoder layers, width)`` of ``arch`` as the recipes
    build it (Admin, vector omegas, shared embeddings) over a joined vocabulary of ``vocab``
    entries (fairseq's four special symbols included)."""
    with tempfile.TemporaryDirectory() as folder:
        words = "".join(f"w{i} 1\n" for i in range(vocab - 4))
        for lang in ("en", "de"):
            (Path(folder) / f"dict.{lang}.txt").write_text(words)
        with torch.device(device):
            model, _, cfg = build_from_flags(folder, ["-s", "en", "-t", "de", "--arch", arch, "--share-all-embeddings",
                                                      "--admin-init", "--admin-as-parameter"])  # fmt: skip
    count = sum(p.numel() for p in model.parameters())
    m = cfg.model
    return count, m.encoder_layers, m.decoder_layers, m.encoder_embed_dim


def rows(vocab):
    out = []
    for arch in PRESETS:
        count, enc, dec, width = parameters(arch, vocab)
        out.append({"arch": arch, "layers": f"{enc}-{dec}", "width": width, "parameters": count,
                    **{name: count * b for name, b in STATE_BYTES.items()},
                    "checkpoint": count * CHECKPOINT_BYTES_PER_PARAMETER})  # fmt: skip
    return out


def markdown(table, vocab):
    gb = 1e9
    head = ["`--arch`", "layers", "width", "parameters", "fp32 (GB)", "`--fp16` (GB)",
            "`--memory-efficient-fp16` (GB)", "checkpoint file (GB)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        lines.append(f"| `{r['arch']}` | {r['layers']} | {r['width']} | {r['parameters'] / 1e6:.1f}M | "
                     f"{r['fp32'] / gb:.2f} | {r['--fp16'] / gb:.2f} | {r['--memory-efficient-fp16'] / gb:.2f} | "
                     f"{r['checkpoint'] / gb:.2f} |")  # fmt: skip
    lines += ["", f"Computed by `python scripts/preset_sizes.py` for a joined vocabulary of {vocab:,} entries "
              "(shared embeddings, vector omegas): the weights, gradients and Adam/RAdam moments each way "
              "of training keeps (16, 20 and 12 bytes per parameter), and the file fairseq saves "
              "(12 bytes per parameter). Activations come on top; not measured."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results/preset_sizes", help="folder for table.md")
    parser.add_argument("--vocab", type=positive_int, default=32000, help="joined vocabulary size (default 32000)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    table = markdown(rows(args.vocab), args.vocab)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic.write_text(Path(args.out) / "table.md", table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
