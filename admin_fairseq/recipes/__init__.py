"""The recipes' Python side: data preparation, training commands, evaluation, comparison.

The steps are command-line tools (``python -m admin_fairseq.recipes.<step> --help`` for
prepare, train, evaluate, compare); the shell scripts under ``recipes/`` chain them. The train
step's tables of published settings are in ``published``, its arithmetic, topology and
command building in ``plan``; ``record.RunRecord`` is what a run's ``run.json`` holds,
written by the train step and read back by every step after it. The same code runs the WMT recipes on GPU
clusters and the tiny Bible runs on a CPU (tests and the main job).
"""


from admin_fairseq.errors import UserError


class RecipeError(UserError):
    """A problem with the user's input that the message explains; the CLIs exit 2 on it."""
