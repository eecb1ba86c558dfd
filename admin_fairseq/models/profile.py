"""Profiled Admin's omegas read from an earlier profile: a checkpoint of a model of the same
shape, or the JSON file that ``--admin-profile-to`` writes."""

import json
from pathlib import Path

import torch


def _omega_residuals(model):
    """[(state-dict key, OmegaResidual)] of every sub-layer, in stack order."""
    return [
        (name + ".omega", module)
        for name, module in model.named_modules()
        if name.endswith("_residual") and hasattr(module, "omega")
    ]


def load_omega_profile(model, path):
    """Set the model's omegas from an earlier profile: a fairseq checkpoint of a model of
    the same shape, or a JSON file ``{"encoder": [...], "decoder": [...]}`` with one value
    (or one vector) per sub-layer in order. Raises ``ValueError`` on any mismatch."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--admin-profile-from: {path} does not exist")
    residuals = _omega_residuals(model)
    if path.suffix == ".json":
        try:
            profile = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(profile, dict):
                raise ValueError("not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"--admin-profile-from: {path} is not a JSON profile "
                             f"{{\"encoder\": [...], \"decoder\": [...]}} ({err})") from None  # fmt: skip
        values = {}
        for side in ("encoder", "decoder"):
            keys = [k for k, _ in residuals if k.startswith(side + ".")]
            given = profile.get(side, [])
            if not isinstance(given, list):
                raise ValueError(f"--admin-profile-from: {path}: {side} must be a list of omegas")
            if len(given) != len(keys):
                raise ValueError(
                    f"--admin-profile-from: {path} has {len(given)} {side} omegas, the model "
                    f"has {len(keys)} {side} sub-layers"
                )
            try:
                values.update({k: torch.as_tensor(v, dtype=torch.float32) for k, v in zip(keys, given)})
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"--admin-profile-from: {path}: a {side} omega is not a number or "
                                 f"a list of numbers ({err})") from None  # fmt: skip
    else:
        from admin_fairseq.checkpoints import CheckpointError, read

        try:
            state = read(path)
        except CheckpointError as err:
            raise ValueError(f"--admin-profile-from: {err}") from None
        state = state.get("model", state)
        values = {k: state[k] for k, _ in residuals if k in state}
        missing = [k for k, _ in residuals if k not in values]
        if missing:
            raise ValueError(
                f"--admin-profile-from: {path} has no omega for {len(missing)} of the model's "
                f"{len(residuals)} sub-layers (first missing: {missing[0]}); it must come from "
                "a transformer_admin model of the same depth"
            )
    with torch.no_grad():
        for key, module in residuals:
            value = torch.as_tensor(values[key]).float().reshape(-1)
            if not torch.isfinite(value).all() or (value <= 0).any():
                raise ValueError(f"--admin-profile-from: {key} in {path} holds an omega that is not a "
                                 "finite positive number (NaN, infinite, zero or negative)")  # fmt: skip
            if value.numel() not in (1, module.omega.numel()):
                raise ValueError(
                    f"--admin-profile-from: {key} in {path} is a vector of size "
                    f"{value.numel()}, the model's is {module.omega.numel()} (its embed_dim)"
                )
            module.omega.copy_(value.expand_as(module.omega))
