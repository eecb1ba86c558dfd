"""Reading a fairseq command line: the helpers that the launcher, the plan and the run record share."""


def flag_value(flags, name, default=None):
    """The value of the last ``name VALUE`` (or ``name=VALUE``) in ``flags``."""
    value = default
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(name + "="):
            value = flag.split("=", 1)[1]
    return value
