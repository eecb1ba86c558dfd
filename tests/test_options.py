"""The model's flags, declared once (admin_fairseq/models/options.py): fairseq's parser gets
each of them without a default, and the architecture gives a configuration that lacks one
(an older checkpoint's) the declared default."""

import argparse

from admin_fairseq import plugin
from admin_fairseq.models import options


def _parse(*flags):
    plugin.load()
    from fairseq import options as fairseq_options

    parser = fairseq_options.get_training_parser()
    return fairseq_options.parse_args_and_arch(parser, ["data", "--arch", "transformer_admin", *flags])


def test_every_flag_reaches_fairseqs_parser_with_its_declared_default():
    args = _parse()
    for option in options.OPTIONS:
        assert getattr(args, option.name) == option.default, option.flag
    given = _parse("--admin-init", "--admin-monitor-interval", "7", "--admin-output-change-scale", "O(1)")
    assert (given.admin_init, given.admin_monitor_interval, given.admin_output_change_scale) == (True, 7, "O(1)")


def test_a_configuration_without_the_flags_gets_their_defaults():
    old = argparse.Namespace(arch="transformer_admin", admin_init=True)  # a checkpoint of before
    options.set_defaults(old)
    assert old.admin_init is True
    assert {o.name: getattr(old, o.name) for o in options.OPTIONS if o.name != "admin_init"} == {
        o.name: o.default for o in options.OPTIONS if o.name != "admin_init"}


def test_a_checkpoint_of_version_0_1_0_still_loads():
    """tests/data/checkpoint_0.1.0: a 2L-2L width-8 Admin model (vector omegas) as this
    version writes it, kept in the tests. A later version must load it (the CHANGELOG's
    promise): fairseq's own loader, through the plugin, gives the same model and omegas."""
    import torch
    from conftest import REPO

    from admin_fairseq.core.omega import calculate_init

    plugin.load()
    from fairseq import checkpoint_utils

    folder = REPO / "tests" / "data" / "checkpoint_0.1.0"
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(folder / "checkpoint.pt")], arg_overrides={"data": str(folder)})
    model = models[0]
    assert type(model).__name__ == "AdminTransformerModel" and cfg.model.admin_init
    omegas = {name: p for name, p in model.named_parameters() if name.endswith("omega")}
    assert len(omegas) == 2 * 2 + 2 * 3  # one per sub-layer
    encoder = next(p for n, p in omegas.items() if n.startswith("encoder."))
    assert encoder.shape == (8,) and torch.allclose(encoder, torch.full((8,), calculate_init(4)))
    src = torch.tensor([[5, 6, 7, 2]])
    out, _ = model(src, torch.tensor([4]), torch.tensor([[2, 5, 6]]))
    assert out.shape == (1, 3, len(task.target_dictionary)) and torch.isfinite(out).all()


def test_the_checks_change_nothing_in_the_configuration():
    import copy

    from admin_fairseq.models.checks import check_admin_args

    for flags in ([], ["--admin-init", "--admin-output-change-scale", "default"],
                  ["--admin-init", "--admin-profile-from", "profile.json"], ["--admin-init", "--admin-profile-to", "p.json"]):  # fmt: skip
        args = _parse(*flags)
        before = copy.deepcopy(vars(args))
        check_admin_args(args)
        assert vars(args) == before, flags
    assert options.profiled(_parse("--admin-init", "--admin-profile-to", "p.json"))
