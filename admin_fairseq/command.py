"""How every command of the project ends: its result, one ``error:`` line, or one line for Ctrl-C.

:func:`run` calls a command's body and turns what escapes it into the exit status users and
scripts rely on: a :class:`~admin_fairseq.errors.UserError` is printed as ``NAME: error:
MESSAGE`` and exits 2; Ctrl-C prints ``NAME: interrupted`` and exits 130 (128 + SIGINT, as a
shell reports it); output piped into a reader that stops (``| head``) ends the command
quietly with 141, as SIGPIPE would. Files are written under temporary names and renamed when complete
(:mod:`admin_fairseq.atomic`), so an interrupted command leaves nothing half-written under
a final name. Anything else is a bug and keeps its traceback.
"""

import os
import sys

from admin_fairseq.errors import UserError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


def run(name, body, *args, errors=(UserError,), after_error="", **kwargs):
    """``body(*args, **kwargs)``'s exit status (an int it returns; anything else counts as
    0), with the errors of ``errors`` and Ctrl-C reported in one line each on standard error."""
    try:
        result = body(*args, **kwargs)
        return result if isinstance(result, int) and not isinstance(result, bool) else 0
    except errors as err:
        print(f"{name}: error: {err}{after_error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{name}: interrupted; files it had finished are kept, nothing half-written is left",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # its output went to a reader that stopped (| head): end as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        return EXIT_BROKEN_PIPE
