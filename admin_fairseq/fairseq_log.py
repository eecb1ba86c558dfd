"""The one reader of fairseq's ``--log-format json`` lines.

fairseq-train prints its statistics as ``... | train_inner | {json}`` (every
``--log-interval`` updates), ``... | valid | {json}`` (each validation) and ``... | train |
{json}`` (each epoch's end). :func:`record` turns one such line into ``(kind, stats)``;
everything that reads a training log (the compare step, the main job's progress lines,
gpu_check) goes through it.
"""

import json
import re

KINDS = ("train_inner", "valid", "train")
_LINE = re.compile(r"\| (train_inner|valid|train) \| (\{.*\})\s*$")


def record(line):
    """``(kind, stats)`` of a JSON statistics line of fairseq-train, else None (also for a
    line whose JSON is cut off, e.g. by a run killed while printing)."""
    match = _LINE.search(line)
    if not match:
        return None
    try:
        return match.group(1), json.loads(match.group(2))
    except json.JSONDecodeError:
        return None


def records(lines, kind=None):
    """The ``(kind, stats)`` of every statistics line in ``lines`` (of one ``kind`` if given)."""
    for line in lines:
        found = record(line)
        if found is not None and (kind is None or found[0] == kind):
            yield found
