"""What the training benchmarks share (``bench_precision.py``, ``bench_monitor.py``): the Bible
slice they train on, the model and its training flags, the device's name, and how results
are written. Not a command of its own."""

import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from admin_fairseq import atomic  # noqa: E402

WIDTH = ["--encoder-embed-dim", "128", "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512",
         "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"]  # fmt: skip
#: a training process's environment: the caller's OMP_NUM_THREADS, else 2 threads
ENV = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))


def bible_slice(data=None):
    """The prepared folder the benchmarks train on: ``data`` if given, else the Bible en-fr,
    3,000 training pairs, sentencepiece 1k, in a cache folder (prepared once)."""
    from admin_fairseq.corpora.bible import cache_dir
    from admin_fairseq.recipes import prepare

    folder = Path(data) if data else cache_dir() / "bench-bible-en-fr-3000"
    prepare.prepare("bible-en-fr", folder, vocab_size=1000, train_size=3000, valid_size=100, test_size=100,
                    log=lambda *_: None)  # fmt: skip
    return folder


def admin_training_flags(data, layers, updates, log_interval):
    """fairseq-train's flags for the benchmarks' model (Admin, vector omegas, width 128) on
    ``data``, without saving; each benchmark adds its own after them."""
    return [str(data / "bin"), "--user-dir", str(REPO / "admin_fairseq"),
            "--arch", "transformer_admin", "--encoder-layers", str(layers), "--decoder-layers", str(layers),
            *WIDTH, "--share-all-embeddings", "--admin-init", "--admin-as-parameter",
            "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "1e-3", "--lr-scheduler",
            "inverse_sqrt", "--warmup-updates", "100", "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", "--dropout", "0.1", "--max-tokens", "1024", "--seed", "1",
            "--max-update", str(updates), "--log-format", "json", "--log-interval", str(log_interval),
            "--no-progress-bar", "--num-workers", "0", "--no-save"]  # fmt: skip


def device(cpu):
    """``(device, its name)``: ``("cpu", the processor)`` or ``("cuda", the GPU's name)``."""
    if cpu:
        return "cpu", platform.processor() or platform.machine()
    return "cuda", torch.cuda.get_device_name()


def write_results(out, result, markdown):
    """``results.json`` and ``results.md`` (``markdown(result)``) in ``out``; the table printed."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "results.json", result)
    atomic.write_text(out / "results.md", markdown(result))
    print(markdown(result), end="")
