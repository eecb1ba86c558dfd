"""The rules read off training curves, shared by the comparison and the stability monitor.

fairseq logs its losses in bits per token (its criterions divide by ln 2), and so are the
constants here. :func:`stalled_runs` says which runs stopped improving; :func:`frequency_loss`
is the level a model reaches without learning anything from the source, the baseline the
stall rule measures against. numpy only: no fairseq, no run folders.
"""

import math
from pathlib import Path

import numpy as np

#: a run is ``stalled`` when over the second half of its updates its validation loss fell by
#: less than STALL_GAIN, and either its best validation loss is less than BASELINE_MARGIN
#: below the frequency baseline (:func:`frequency_loss`), or another run of the comparison
#: fell by more than PEER_GAIN over its second half and the run's best validation loss ends
#: more than STALL_GAP above the best run's
STALL_GAIN, BASELINE_MARGIN, PEER_GAIN, STALL_GAP = 0.25, 0.5, 0.5, 1.0  # bits


def second_half_gain(curve):
    """How much the validation loss fell over the second half of the run: the value logged
    at (or first after) half the last update, minus the best value from there on. None with
    fewer than two finite points in that half."""
    points = [(u, loss) for u, loss in curve if math.isfinite(loss)]
    if len(points) < 2:
        return None
    half = points[-1][0] / 2
    tail = [loss for u, loss in points if u >= half]
    return tail[0] - min(tail) if len(tail) >= 2 else None


def stalled_runs(curves, baseline=None):
    """The names in ``curves`` (name -> [(update, valid loss)]) that stalled: their validation
    loss fell by less than STALL_GAIN over their second half, and they ended either less than
    BASELINE_MARGIN below ``baseline`` (the frequency baseline in the same unit, or a dict of
    one per name; None: unknown), or more than STALL_GAP above the best run while another
    run fell by more than PEER_GAIN over its second half. A run with fewer than two
    validations in its second half is never called stalled."""
    gains = {name: second_half_gain(curve) for name, curve in curves.items()}
    best = {name: min((x for _, x in curve if math.isfinite(x)), default=math.inf)
            for name, curve in curves.items()}  # fmt: skip
    overall = min(best.values(), default=math.inf)
    stalled = set()
    for name, gain in gains.items():
        if gain is None or gain >= STALL_GAIN:
            continue
        floor = baseline.get(name) if isinstance(baseline, dict) else baseline
        if floor is not None and best[name] > floor - BASELINE_MARGIN:
            stalled.add(name)  # no better than what the training data give without learning
        elif best[name] - overall > STALL_GAP and any(
                other != name and g is not None and g > PEER_GAIN for other, g in gains.items()):
            stalled.add(name)
    return stalled


_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16, 9: np.uint32,
           10: np.uint64}  # fmt: skip


def _token_counts(prefix, size):
    """Counts of every token id (``size`` of them) in fairseq's binarized file ``prefix``.bin
    (its ``mmap`` format, fairseq-preprocess's default; end-of-sentence included). None
    when the files are missing or in another format."""
    idx, bin_ = Path(f"{prefix}.idx"), Path(f"{prefix}.bin")
    if not (idx.is_file() and bin_.is_file()):
        return None
    with open(idx, "rb") as f:
        head = f.read(18)
    if len(head) < 18 or head[:9] != b"MMIDIDX\x00\x00" or head[17] not in _DTYPES:
        return None
    tokens = np.memmap(bin_, dtype=_DTYPES[head[17]], mode="r")
    return np.bincount(tokens, minlength=size)[:size].astype(np.float64) if tokens.size else None


def frequency_loss(bin_dir, src, tgt, label_smoothing=0.0, subset="valid"):
    """The ``subset`` loss, in bits per token as fairseq logs it, of a model that ignores the
    source and gives every target token its frequency in the training data (add-one smoothed
    over the dictionary, then mixed with the uniform distribution as much as
    ``label_smoothing`` makes best on those frequencies), scored with fairseq's label-smoothed
    loss. A
    translation model whose validation loss stays at this level has learnt nothing from the
    source. None when ``bin_dir`` lacks the binarized files (fairseq-preprocess's layout)."""
    bin_dir = Path(bin_dir)
    dict_path = bin_dir / f"dict.{tgt}.txt"
    if not dict_path.is_file():
        return None
    with open(dict_path, encoding="utf-8", errors="replace") as f:
        size = 4 + sum(1 for line in f if line.strip())  # <s>, <pad>, </s>, <unk> come first
    counts = {}
    for split in ("train", subset):
        for pair in (f"{src}-{tgt}", f"{tgt}-{src}"):
            found = _token_counts(bin_dir / f"{split}.{pair}.{tgt}", size)
            if found is not None:
                counts[split] = found
                break
    if len(counts) < 2 or not counts[subset].sum():
        return None
    eps = float(label_smoothing)
    eps_i = eps / (size - 1)  # fairseq's label_smoothed_nll_loss: (1 - eps - eps_i) nll + eps_i sum
    train = counts["train"]
    q = (1 - eps - eps_i) * (train + 1) / (train.sum() + size) + eps_i  # minimises that on train
    nll = float(counts[subset] @ -np.log(q)) / counts[subset].sum()
    loss = (1 - eps - eps_i) * nll + eps_i * float(-np.log(q).sum())
    return loss / math.log(2)
