"""The one base class of the errors users see.

A :class:`UserError` says what is wrong (the flag, file or line) and what to do about it.
Every command of the project prints it as ``<command>: error: <message>`` on standard error
and exits with status 2; anything else that escapes is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input, a missing file, a refused setting: the message is for the user."""
