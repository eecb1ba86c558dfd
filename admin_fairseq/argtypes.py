"""Numbers checked at the door: argparse types that refuse a value out of range.

Each is used as ``type=`` of an option; argparse then prints ``prog: error: argument
--flag: ...`` and exits with status 2 before the command does any work. The same checks
serve flags that are passed on to fairseq (:func:`check_fairseq_numbers`).
"""

import argparse
import math


def _number(kind, text):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def ranged(kind, low=None, high=None, low_open=False, high_open=False, keep_text=False):
    """An argparse type: ``kind`` (int or float) within ``[low, high]`` (an end left open
    with ``low_open``/``high_open``; ``None``: unbounded). ``keep_text`` returns the text as
    given (a learning rate recorded as the user wrote it) once it is checked."""

    def check(text):
        value = _number(kind, text)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {describe(low, high, low_open, high_open)}; got {text}")
        return text if keep_text else value

    check.__name__ = kind.__name__  # argparse names the type in its messages
    return check


def describe(low, high, low_open=False, high_open=False):
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'more than' if low_open else 'at least'} {low:g}"
    return f"{'less than' if high_open else 'at most'} {high:g}"


positive_int = ranged(int, 1)
nonnegative_int = ranged(int, 0)
positive_float = ranged(float, 0, low_open=True)
nonnegative_float = ranged(float, 0)
finite_float = ranged(float)
port = ranged(int, 1, 65535)

#: fairseq-train's numeric flags that the train step checks when given after ``--``:
#: ``flag: (type, low, high, low_open, high_open)``; a comma-separated list (``--lr``,
#: ``--update-freq``) is checked item by item
FAIRSEQ_NUMBERS = {
    "--max-tokens": (int, 1, None, False, False),
    "--batch-size": (int, 1, None, False, False),
    "--update-freq": (int, 1, None, False, False),
    "--max-update": (int, 0, None, False, False),
    "--max-epoch": (int, 0, None, False, False),
    "--lr": (float, 0, None, True, False),
    "--warmup-updates": (int, 0, None, False, False),
    "--warmup-init-lr": (float, 0, None, False, False),
    "--weight-decay": (float, 0, None, False, False),
    "--clip-norm": (float, 0, None, False, False),
    "--dropout": (float, 0, 1, False, True),
    "--attention-dropout": (float, 0, 1, False, True),
    "--activation-dropout": (float, 0, 1, False, True),
    "--label-smoothing": (float, 0, 1, False, True),
    "--seed": (int, 0, 2**32 - 1, False, False),
    "--save-interval-updates": (int, 0, None, False, False),
    "--validate-interval-updates": (int, 0, None, False, False),
    "--log-interval": (int, 1, None, False, False),
    "--encoder-layers": (int, 1, None, False, False),
    "--decoder-layers": (int, 1, None, False, False),
    "--encoder-embed-dim": (int, 1, None, False, False),
    "--decoder-embed-dim": (int, 1, None, False, False),
    "--encoder-ffn-embed-dim": (int, 1, None, False, False),
    "--decoder-ffn-embed-dim": (int, 1, None, False, False),
    "--encoder-attention-heads": (int, 1, None, False, False),
    "--decoder-attention-heads": (int, 1, None, False, False),
}


def check_fairseq_numbers(flags):
    """Raise ``ValueError`` naming the first fairseq flag in ``flags`` whose value is out of
    range (:data:`FAIRSEQ_NUMBERS`)."""
    for i, token in enumerate(flags):
        name, has_value, value = token.partition("=")
        if name not in FAIRSEQ_NUMBERS:
            continue
        if not has_value:
            if i + 1 >= len(flags):
                continue
            value = flags[i + 1]
        check = ranged(*FAIRSEQ_NUMBERS[name])
        for item in value.split(","):
            try:
                check(item)
            except argparse.ArgumentTypeError as err:
                raise ValueError(f"fairseq flag {name} {value}: {err}") from None
