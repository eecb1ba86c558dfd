"""Loading the plugin (admin_fairseq/plugin.py): it registers, and changes nothing else that a
run did not ask for but the protective changes, each named here with its own test.

The changes loading makes, and only these: torch's ``weights_only`` allowlist gains the
classes of fairseq's checkpoints; fairseq's checkpoint loader reads each file through the
project's reader; fairseq's object broadcast lets the other ranks of a resumed run receive
what rank 0 loaded; fairseq's copies of a checkpoint go through a temporary name. fairseq's
``Trainer`` and fairseq-train's loop stay fairseq's own until a run asks for the monitor.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import USER_DIR, cli_path

PROBE = r"""
import json, logging
logging.disable(logging.WARNING)
import fairseq.trainer, fairseq_cli.train, fairseq.checkpoint_utils as cu, fairseq.distributed.utils as du
import torch
def names():
    T = fairseq.trainer.Trainer
    return {
        "Trainer": {m: getattr(T, m).__module__ + "." + getattr(T, m).__qualname__
                    for m in ("train_step", "valid_step", "clip_grad_norm", "save_checkpoint", "load_checkpoint")},
        "validate": fairseq_cli.train.validate.__module__, "validate_and_save": fairseq_cli.train.validate_and_save.__module__,
        "load_checkpoint_to_cpu": getattr(cu.load_checkpoint_to_cpu, "_admin_fairseq_guard", False), "PathManager": type(cu.PathManager).__name__,
        "broadcast": du._broadcast_object_slow.__module__, "safe_globals": len(torch.serialization.get_safe_globals()),
    }
before = names()
import admin_fairseq.models  # what --user-dir does
print(json.dumps({"before": before, "after": names()}))
"""


def test_loading_the_plugin_changes_only_the_named_protective_things():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    before, after = seen["before"], seen["after"]
    assert after["Trainer"] == before["Trainer"] and all(v.startswith("fairseq.trainer.Trainer.")
                                                         for v in after["Trainer"].values())  # fmt: skip
    assert after["validate"] == after["validate_and_save"] == "fairseq_cli.train"
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"load_checkpoint_to_cpu", "PathManager", "broadcast", "safe_globals"}
    assert after["load_checkpoint_to_cpu"] is True  # checkpoints.guard_fairseq_loader
    assert after["broadcast"] == "admin_fairseq.checkpoint_compat" and after["PathManager"] == "_AtomicCopies"


def _train(bin_dir, save_dir, user_dir):
    flags = [cli_path("fairseq-train"), bin_dir, "--arch", "transformer", "--encoder-layers", "1",
             "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
             "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
             "--decoder-attention-heads", "2", "--share-all-embeddings", "--optimizer", "adam", "--lr", "1e-3",
             "--max-tokens", "512", "--max-update", "6", "--cpu", "--seed", "3", "--log-format", "json",
             "--log-interval", "1", "--no-progress-bar", "--num-workers", "0", "--save-dir", save_dir,
             "--no-epoch-checkpoints", "--disable-validation"]  # fmt: skip
    if user_dir:
        flags += ["--user-dir", USER_DIR]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([str(f) for f in flags], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    losses = [line.split('"loss": ')[1].split(",")[0] for line in result.stdout.splitlines() + result.stderr.splitlines()
              if '"loss": ' in line and "train_inner" in line]  # fmt: skip
    return losses, torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_a_plain_transformer_trains_the_same_with_and_without_the_plugin(bible_recipe_data, tmp_path):
    """fairseq's own model under --user-dir admin_fairseq: the same losses, weights and
    checkpoint contents (but the --user-dir setting itself) as without it."""
    plain_losses, plain = _train(bible_recipe_data / "bin", tmp_path / "plain", user_dir=False)
    ours_losses, ours = _train(bible_recipe_data / "bin", tmp_path / "ours", user_dir=True)
    assert len(plain_losses) == 6 and ours_losses == plain_losses
    assert plain["model"].keys() == ours["model"].keys()
    assert all(torch.equal(plain["model"][k], ours["model"][k]) for k in plain["model"])
    assert sorted(plain) == sorted(ours) and sorted(plain["extra_state"]) == sorted(ours["extra_state"])
    assert "admin_monitor" not in ours["extra_state"]


def test_atomic_copies_write_through_a_symlink_and_never_leave_a_half_copy(tmp_path, monkeypatch):
    """The change to fairseq's PathManager (checkpoint_compat.atomic_checkpoint_copies):
    checkpoint_last.pt / checkpoint_best.pt copies go to a temporary name and are renamed."""
    import shutil

    from fairseq.file_io import PathManager

    from admin_fairseq.checkpoint_compat import _AtomicCopies

    copies = _AtomicCopies(PathManager)
    src = tmp_path / "checkpoint_3_600.pt"
    src.write_bytes(b"new checkpoint")
    (tmp_path / "checkpoint7.pt").write_bytes(b"epoch 7")
    (tmp_path / "checkpoint_best.pt").symlink_to("checkpoint7.pt")
    assert copies.copy(str(src), str(tmp_path / "checkpoint_best.pt"), overwrite=True)
    assert (tmp_path / "checkpoint_best.pt").is_symlink()
    assert (tmp_path / "checkpoint7.pt").read_bytes() == b"new checkpoint"

    (tmp_path / "checkpoint_last.pt").write_bytes(b"whole previous checkpoint")

    def dies_half_way(a, b):
        with open(b, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", dies_half_way)
    with pytest.raises(OSError):
        copies.copy(str(src), str(tmp_path / "checkpoint_last.pt"), overwrite=True)
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == b"whole previous checkpoint"
    assert not list(tmp_path.glob(".*.tmp"))


def _broadcast_worker(rank, port, folder):
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from admin_fairseq import checkpoint_compat

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    sent = {"cfg": OmegaConf.create({"model": {"arch": "transformer_admin"}}), "weights": torch.arange(4.0)}
    got = checkpoint_compat._receive_broadcast_object(sent if rank == 0 else None, 0, None, torch.device("cpu"))
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as out:
        json.dump({"arch": got["cfg"]["model"]["arch"], "weights": got["weights"].tolist(),
                   "kind": type(got["cfg"]).__name__}, out)  # fmt: skip
    dist.destroy_process_group()


def test_the_broadcast_hands_a_resumed_state_to_the_other_rank(tmp_path):
    """The change to fairseq's object broadcast (checkpoint_compat.allow_resuming_on_several_workers):
    what rank 0 loaded on resume (an omegaconf DictConfig among it) reaches rank 1 whole,
    where torch's default weights-only load refuses it."""
    import torch.multiprocessing as mp

    from conftest import free_port

    mp.start_processes(_broadcast_worker, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {"arch": "transformer_admin", "weights": [0.0, 1.0, 2.0, 3.0], "kind": "DictConfig"}
