"""The recipes' Python side: data preparation, training commands, evaluation, comparison.

Each module is a command-line tool (``python -m admin_fairseq.recipes.<name> --help``); the
shell scripts under ``recipes/`` chain them. The same code runs the WMT recipes on GPU
clusters and the tiny Bible runs on a CPU (tests and the main job).
"""


from admin_fairseq.errors import UserError


class RecipeError(UserError):
    """A problem with the user's input that the message explains; the CLIs exit 2 on it."""
