"""The one way the project writes a file: complete, or not at all.

Every file goes to a temporary name in the same folder and is renamed over its final name
only when it is complete (a rename within one file system is atomic). A process killed
mid-write, a full disk or an exception leaves the previous file, or none, and no
half-written file under the final name; the temporary file is removed on failure.

The file gets the permissions ``open()`` would give it (``0o666`` less the umask), not the
private ``0o600`` of a temporary file, so that data shared with colleagues stays readable.
A final name that is a symbolic link is written through: the link stays and its target is
replaced, as fairseq's own copies do.
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path


def _umask():
    """The process's umask (reading it means setting it; set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def final_path(path):
    """``path`` with a symbolic link at its end followed (to the file it names)."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def replacing(path):
    """Yield a temporary path beside ``path``; when the block ends without an exception,
    rename it to ``path``; otherwise delete it. The folder is created if needed."""
    path = final_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text):
    """Write ``text`` (UTF-8, ``\\n`` line ends as given) to ``path``."""
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as out:
        out.write(text)


def write_json(path, data):
    """Write ``data`` as indented JSON with a final newline."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_lines(path, lines):
    """Write one line per item, each ending in ``\\n``; returns the number of lines."""
    n = 0
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for line in lines:
            out.write(line + "\n")
            n += 1
    return n


def torch_save(obj, path):
    """``torch.save`` ``obj`` to ``path``."""
    import torch

    with replacing(path) as tmp:
        torch.save(obj, tmp)
