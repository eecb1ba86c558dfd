"""The monitor's warning rules: the range each quantity held early in the run
(:class:`Reference`), the warnings of one measurement against those ranges (:class:`Ranges`),
and the same rules replayed on a recorded run (:func:`replay`). Plain Python: no torch, no
fairseq, so that a run's log can be judged anywhere.
"""

import math

#: a quantity warns when it leaves its early range by more than this factor
DEFAULT_FACTOR = 10.0
#: the early range: the measurements from the learning rate's reaching
#: :data:`REFERENCE_LR_SHARE` of its peak to the end of the warm-up, and at least
#: REFERENCE_POINTS of them; departures are looked for from CHECK_AFTER values on
REFERENCE_POINTS = 5
CHECK_AFTER = 3
REFERENCE_LR_SHARE = 0.1
#: sub-layers named when several leave their range at one update (the farthest first)
SHOWN_DEPARTURES = 3


class Reference:
    """The range a quantity held early in the run, and whether it is outside it now.

    The range is made of the values measured while ``gathering`` (the warm-up, see
    :meth:`StabilityMonitor._gathering`), and of at least :data:`REFERENCE_POINTS` values; it
    is fixed after that. While it is being made, a value more than ``factor`` times outside
    the range of the values before it (from :data:`CHECK_AFTER` of them on) is a departure
    too, and is kept out of the range: a blow-up during the warm-up is caught, while the
    gradual drift of a healthy warm-up widens the range. A quantity that left the range is
    back when it is within ``sqrt(factor)`` of it again, so that one hovering at the edge is
    not reported at every measurement."""

    def __init__(self, factor):
        self.factor = factor
        self.values = []
        self.updates = []
        self.outside = False

    def add(self, update, value, gathering):
        """Record ``value``; ``(low, high)`` when it leaves the range (first time only), else
        None."""
        checked = len(self.values) >= CHECK_AFTER
        if not math.isfinite(value):
            if checked and not self.outside:
                self.outside = True
                return min(self.values), max(self.values)
            return None
        if value <= 0:  # no change measured (an update lost to rounding): nothing to compare
            return None
        if checked:
            low, high = min(self.values), max(self.values)
            if value > high * self.factor or value < low / self.factor:
                first = not self.outside
                self.outside = True
                return (low, high) if first else None
            margin = math.sqrt(self.factor)
            if self.outside and low / margin <= value <= high * margin:
                self.outside = False
        if (gathering or len(self.values) < REFERENCE_POINTS) and not self.outside:
            self.values.append(value)
            self.updates.append(update)
        return None

    def state(self):
        return {"values": list(self.values), "updates": list(self.updates), "outside": self.outside}

    def load(self, state):
        self.values = [float(v) for v in state.get("values", [])]
        self.updates = [int(u) for u in state.get("updates", [])]
        self.outside = bool(state.get("outside", False))


class Ranges:
    """The early range of every measured quantity of a run, by name, and the warnings of a
    measurement that leaves them; kept in the checkpoints (:meth:`state`, :meth:`load`)."""

    def __init__(self, factor=DEFAULT_FACTOR):
        self.factor = factor
        self.references = {}

    def departures(self, update, lr, values, warmup, peak):
        """The warnings of one measurement (``values``: name -> number, as logged) against
        the early ranges, which it updates; ``warmup`` and ``peak`` are the schedule's warm-up
        updates and peak learning rate."""
        reference_open = lr >= REFERENCE_LR_SHARE * peak
        gathering = update <= warmup
        messages, shares = [], []  # shares: (how far out, message) of the sub-layers' ratios
        for key, value in values.items():
            if key.startswith("output_change_per_lr2/"):
                label = f"the output change per squared learning rate of the {key.split('/')[1]}"
                observed = value
            elif key.startswith("share/"):
                label = f"{key.split('/')[1]}'s branch-to-skip variance ratio share/(1-share)"
                observed = value / (1 - value) if value < 1 else math.inf
            else:
                continue
            reference = self.references.get(key)
            if reference is None:
                if not reference_open:
                    continue
                reference = self.references[key] = Reference(self.factor)
            left = reference.add(update, observed, gathering)
            if left is None:
                continue
            low, high = left
            detail = (f"share {value:.3g}" if key.startswith("share/")
                      else f"output change {values[key.replace('_per_lr2', '')]:.3g}")  # fmt: skip
            message = (f"update {update}: {label} is {observed:.3g} ({detail}), outside "
                       f"{low:.3g}..{high:.3g} (its range over updates {reference.updates[0]}-"
                       f"{reference.updates[-1]}) by more than {self.factor:g}x")  # fmt: skip
            if key.startswith("share/"):
                shares.append((max(observed / high, low / observed) if observed > 0 else math.inf, message))
            else:
                messages.append(message)
        shares.sort(key=lambda item: -item[0])
        messages += [message for _, message in shares[:SHOWN_DEPARTURES]]
        if len(shares) > SHOWN_DEPARTURES:
            messages.append(f"update {update}: {len(shares) - SHOWN_DEPARTURES} more sub-layers' "
                            "branch-to-skip ratios left their early range (the farthest are named above)")  # fmt: skip
        return messages

    def state(self):
        return {k: r.state() for k, r in self.references.items()}

    def load(self, state):
        for key, value in (state or {}).items():
            self.references[key] = Reference(self.factor)
            self.references[key].load(value)


def replay(records, warmup, peak_lr, factor=DEFAULT_FACTOR):
    """The range warnings a run's recorded measurements give by the rules above: ``records``
    maps an update to its logged values (``admin_fairseq.recipes.compare.read_log``'s
    ``monitor``) and the learning rate of that update (``"lr"``, as fairseq logs it after
    the update: the next one's, close enough for the rule's tenth of the peak)."""
    watcher = Ranges(factor)
    messages = []
    for update in sorted(records):
        values = {k: v for k, v in records[update].items() if k != "lr"}
        messages += watcher.departures(update, records[update].get("lr", peak_lr), values, warmup, peak_lr)
    return messages
