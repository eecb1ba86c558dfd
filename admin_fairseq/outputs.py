"""What a command may write: the files it wrote before, and new ones; never the user's own.

A command that writes into a folder first *claims* the names it will write there
(:meth:`Folder.claim`). The claim is recorded in the folder (:data:`MANIFEST`, with the
command's name) before anything is written, so that a run interrupted half-way still owns
what it left. A name that is already in the folder and was not written by the same command
is refused before anything is written: the user's notes, their corpus, another command's
results. Starting over (:meth:`Folder.remove_owned`) removes only what the manifest lists.

:func:`refuse_overlap` is the other half: an output that is one of the command's inputs, or
would be written over one, is refused naming both paths.
"""

import json
import os
import shutil
from pathlib import Path

from admin_fairseq import atomic
from admin_fairseq.errors import UserError

#: The record of what a command wrote in a folder.
MANIFEST = ".admin-fairseq-outputs.json"


class OutputError(UserError):
    """An output that would overwrite or delete something the command does not own."""


def _same(a, b):
    """Whether paths ``a`` and ``b`` name the same file (or would, once written)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(os.path.realpath(a)) == Path(os.path.realpath(b))


def inside(path, folder):
    """Whether ``path`` is ``folder`` or lies under it."""
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def refuse_overlap(outputs, inputs, what="output"):
    """Raise :class:`OutputError` when an output in ``outputs`` is, or holds, one of
    ``inputs``. ``outputs``: files or folders the command will write or replace;
    ``inputs``: files or folders it reads. Both as ``(label, path)`` pairs or paths."""
    def labelled(items):
        return [(item if isinstance(item, tuple) else (None, item)) for item in items if item]

    for out_label, out in labelled(outputs):
        for in_label, src in labelled(inputs):
            if _same(out, src) or inside(src, out):
                raise OutputError(
                    f"{out_label or what} {out} would overwrite {in_label or 'the input'} {src}, "
                    "which this command reads; choose another output"
                )


class Folder:
    """A folder a command writes into, and the names in it that command owns."""

    def __init__(self, path, command):
        self.path = Path(path)
        self.command = command

    @property
    def manifest(self):
        return self.path / MANIFEST

    def record(self):
        """The folder's manifest as a dict (``{}`` when there is none); a manifest that is
        not ours to read is an :class:`OutputError` naming it."""
        if not self.manifest.exists():
            return {}
        try:
            record = json.loads(self.manifest.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or not isinstance(record.get("files", []), list):
                raise ValueError("not a manifest")
        except (ValueError, UnicodeDecodeError) as err:
            raise OutputError(f"{self.manifest} is not a readable record of outputs ({err}); "
                              "move it away or choose another folder") from None  # fmt: skip
        return record

    def owned(self):
        """The names this command wrote in the folder (an empty set for another command's)."""
        record = self.record()
        if record and record.get("command") != self.command:
            return set()
        return set(record.get("files", []))

    def written_by_other(self):
        """The command that wrote the folder's manifest, when it is not this one."""
        command = self.record().get("command")
        return command if command and command != self.command else None

    def claim(self, names, hint="choose another folder"):
        """Own ``names`` (names directly in the folder) before writing them: refuse any that
        exists and that this command did not write; record the rest in the manifest."""
        other = self.written_by_other()
        if other:
            raise OutputError(f"{self.path} holds the outputs of {other}, not {self.command}; {hint}")
        owned = self.owned()
        taken = [n for n in names if n not in owned and ((self.path / n).exists() or (self.path / n).is_symlink())]
        if taken:
            shown = ", ".join(str(self.path / n) for n in sorted(taken)[:3])
            raise OutputError(
                f"{shown}{' ...' if len(taken) > 3 else ''} already exist{'s' if len(taken) == 1 else ''} and "
                f"{'was' if len(taken) == 1 else 'were'} not written by {self.command}; nothing "
                f"was changed: move {'it' if len(taken) == 1 else 'them'} away or {hint}"
            )
        if not set(names) <= owned:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic.write_json(self.manifest, {"command": self.command, "files": sorted(owned | set(names))})

    def adopt(self, names):
        """Record ``names`` as this command's without a look: for a folder the command has
        just made and filled itself (a temporary folder renamed into place afterwards)."""
        atomic.write_json(self.manifest, {"command": self.command, "files": sorted(self.owned() | set(names))})

    def remove_owned(self, keep=()):
        """Remove what this command wrote in the folder (but ``keep``), and nothing else."""
        owned = self.owned()
        for name in sorted(owned - set(keep)):
            path = self.path / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        atomic.write_json(self.manifest, {"command": self.command, "files": sorted(owned & set(keep))})

    def extra(self):
        """Names in the folder that this command did not write (the manifest aside)."""
        if not self.path.is_dir():
            return []
        owned = self.owned() | {MANIFEST}
        return sorted(p.name for p in self.path.iterdir() if p.name not in owned)
