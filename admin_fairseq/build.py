"""Build a fairseq model in memory exactly as ``fairseq-train`` would, from its flags."""

import torch


def build_from_flags(data_dir, flags, seed=None):
    """Parse ``fairseq-train`` arguments (``data_dir`` followed by ``flags``), set up the task
    and build the model, seeding torch first when ``seed`` is given.

    Returns ``(model, task, cfg)``. Used by the analysis and benchmark scripts and the tests,
    so that what they measure is the model users train.
    """
    from admin_fairseq import plugin

    plugin.load()  # transformer_admin registered, whether or not the flags name --user-dir
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(parser, [str(data_dir), *flags]))
    task = tasks.setup_task(cfg.task)
    if seed is not None:
        torch.manual_seed(seed)
    return task.build_model(cfg.model), task, cfg
