"""Build fairseq models in memory through fairseq's own argument parsing."""

import torch
from fairseq import options

from admin_fairseq import plugin
from admin_fairseq.build import build_from_flags

plugin.load()  # as fairseq does for --user-dir; this process imported admin_fairseq first

from conftest import USER_DIR

SMALL = [
    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
    "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
]  # fmt: skip


def _argv(flags):
    return ["--user-dir", str(USER_DIR), "-s", "en", "-t", "fr", *flags]


def parse(data_dir, *flags):
    parser = options.get_training_parser()
    return options.parse_args_and_arch(parser, [str(data_dir), *_argv(flags)])


def build(data_dir, *flags, seed=1):
    """Return ``(model, task)`` built as fairseq-train would, with ``seed`` set first."""
    model, task, _ = build_from_flags(data_dir, _argv(flags), seed=seed)
    return model, task


def sample_batch(task, batch=3, src_len=7, tgt_len=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    vocab = len(task.source_dictionary)
    first = task.source_dictionary.nspecial
    src = torch.randint(first, vocab, (batch, src_len), generator=gen)
    prev = torch.randint(first, vocab, (batch, tgt_len), generator=gen)
    prev[:, 0] = task.target_dictionary.eos()
    lengths = torch.full((batch,), src_len, dtype=torch.long)
    return src, lengths, prev


def forward(model, batch, seed=123):
    torch.manual_seed(seed)  # same dropout masks for models that consume RNG alike
    src, lengths, prev = batch
    logits, _ = model(src, lengths, prev)
    return logits
