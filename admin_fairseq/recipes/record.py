"""The one description of a training run: what the train step planned and how the run ended.

:func:`admin_fairseq.recipes.plan.build` makes a :class:`RunRecord` from the train step's
settings (the model, the batch and how it is split over workers, the exact fairseq flags and
the command that runs them); :func:`admin_fairseq.recipes.train.run` writes it to
``SAVE_DIR/run.json`` when the run starts and again, with its outcome, when it ends. The train
step (is this exact run finished?), the evaluate step (which data, which averaging window,
CPU or GPU), the comparison (method, depth, batch, status, the data of the frequency
baseline) and the main job read it back with :meth:`RunRecord.read`; none of them parses
``run.json`` or the command line itself.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from admin_fairseq import atomic
from admin_fairseq.fairseq_flags import flag_value
from admin_fairseq.recipes import RecipeError

FILE = "run.json"

#: fairseq flags that say how a run is carried out, not what it trains: a run may resume with
#: other values (another number of workers, a later --max-update, other logging)
HOW_FLAGS = frozenset({
    "--max-tokens", "--update-freq", "--max-update", "--distributed-world-size",
    "--distributed-num-procs", "--distributed-port", "--distributed-init-method",
    "--distributed-backend", "--ddp-backend", "--num-workers", "--log-interval", "--log-format",
    "--tensorboard-logdir", "--save-interval-updates", "--validate-interval-updates",
    "--keep-interval-updates", "--keep-last-epochs", "--no-epoch-checkpoints", "--cpu",
    "--admin-monitor-interval", "--admin-monitor-stop", "--heartbeat-timeout", "--restore-file",
    "--reset-optimizer", "--reset-dataloader", "--reset-meters", "--reset-lr-scheduler",
})  # fmt: skip


def _flags_by_name(flags):
    """``{flag: value}`` of a fairseq command (its first, positional argument as ``data``);
    a flag with no value maps to True."""
    found, name = {}, None
    for i, token in enumerate(flags):
        if token.startswith("--"):
            name, _, value = token.partition("=")
            found[name] = value if value else True
        elif name is None and i == 0:
            found["data"] = token
        elif name is not None:
            found[name] = token if found[name] is True else f"{found[name]} {token}"
    return found


@dataclass(frozen=True)
class RunRecord:
    # the model and the recipe
    method: str
    encoder_layers: int
    decoder_layers: int
    batch: str  # AxB: tokens per update as the published runs name it
    recipe: str
    size: str
    arch: str
    # how the batch is split: nodes x per_node workers, each --max-tokens x --update-freq
    workers: int
    nodes: int
    node_rank: int
    per_node: int
    cpu: bool
    precision: str
    max_tokens: int
    update_freq: int
    arithmetic: str
    avg_epochs: str  # FIRST-LAST epochs kept for averaging; "" when stopped by --updates
    data: str  # the prepared folder
    save_dir: str
    seed: int
    fairseq_flags: tuple  # exactly what fairseq-train gets (the data's bin folder first)
    command: str  # the launcher line that runs them, as one shell line
    profile_command: Optional[str] = None  # profiled Admin's first, one-worker run
    # the outcome, filled in by the train step
    status: str = "planned"  # running, finished or "failed (exit N)"
    started: Optional[str] = None
    exit_code: Optional[int] = None
    seconds: Optional[float] = None

    def __post_init__(self):
        object.__setattr__(self, "fairseq_flags", tuple(self.fairseq_flags))

    # -- reading and writing

    @property
    def path(self):
        return Path(self.save_dir) / FILE

    def write(self):
        atomic.write_json(self.path, self.to_json())

    def to_json(self):
        return dict(dataclasses.asdict(self), fairseq_flags=list(self.fairseq_flags))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def read(cls, run_dir):
        """The record in ``run_dir/run.json``; RecipeError naming the file when it is missing or
        is not a run record (fields this version does not know are ignored)."""
        path = Path(run_dir) / FILE
        if not path.is_file():
            raise RecipeError(f"{run_dir} has no {FILE}; is it a folder made by the training step?")
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise RecipeError(f"{path} cannot be read as JSON ({err})") from None
        if not isinstance(found, dict):
            raise RecipeError(f"{path} is not a run record (a JSON object)")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in found]
        if missing:
            raise RecipeError(f"{path} is not a run record of the training step: it lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in found.items() if k in fields})

    @classmethod
    def read_if_any(cls, run_dir):
        """:meth:`read`, or None when ``run_dir`` has no record."""
        return cls.read(run_dir) if (Path(run_dir) / FILE).is_file() else None

    # -- what the flags say

    @property
    def finished(self):
        return self.status == "finished"

    def differences(self, other):
        """``[(setting, this value, other value)]``: what the two runs train differently
        (the fairseq flags but :data:`HOW_FLAGS`, the method and the batch); empty
        when one can resume the other."""
        mine, theirs = _flags_by_name(self.fairseq_flags), _flags_by_name(other.fairseq_flags)
        names = sorted((set(mine) | set(theirs)) - HOW_FLAGS)
        found = [(name, mine.get(name), theirs.get(name)) for name in names if mine.get(name) != theirs.get(name)]
        # the rest is in the flags (--encoder-layers, --seed, ...); the batch is the tokens per
        # update, which may be split over other workers when a run resumes
        for field in ("method", "batch"):
            if getattr(self, field) != getattr(other, field):
                found.append((field, getattr(self, field), getattr(other, field)))
        return found

    def flag(self, name, default=None):
        """The value of fairseq flag ``name`` in the run's command (the last one given)."""
        return flag_value(self.fairseq_flags, name, default)

    @property
    def bin_dir(self):
        """The binarized data fairseq reads (the first of its paths)."""
        return Path(self.fairseq_flags[0].split(":")[0])

    def languages(self):
        """``(src, tgt)``: from ``-s``/``-t`` when given, else from the names of the binarized
        training files (fairseq-preprocess writes ``train.SRC-TGT.*``); None when unclear."""
        src = self.flag("--source-lang", self.flag("-s"))
        tgt = self.flag("--target-lang", self.flag("-t"))
        if src and tgt:
            return src, tgt
        pairs = {p.name.split(".")[1] for p in self.bin_dir.glob("train.*-*.*.idx")}
        if len(pairs) != 1:
            return None
        src, tgt = pairs.pop().split("-", 1)
        return src, tgt

    @property
    def label_smoothing(self):
        """The label smoothing of the run's loss (0 for plain cross-entropy)."""
        if self.flag("--criterion") == "label_smoothed_cross_entropy":
            return float(self.flag("--label-smoothing", 0.0))
        return 0.0
