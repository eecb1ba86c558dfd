"""Training the command a GPU user runs, with --cpu appended, through the suite's shim for
fairseq's GPU code (tests/gpu_on_cpu); then the evaluate step and the CTranslate2 conversion.
Used by tests/test_gpu_faithful.py and tests/test_gpu_faithful_radam.py."""

import math
import sys
from pathlib import Path


from admin_fairseq import fairseq_log
from admin_fairseq.recipes import evaluate, plan, train
from admin_fairseq.checkpoints import read as read_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu_on_cpu"))
import gpu_on_cpu  # noqa: E402


def _args(argv, extra=()):
    """The train step's :class:`~admin_fairseq.recipes.plan.RunSettings` for ``argv -- extra``."""
    return train.settings([*argv, "--", *extra])


#: What the tests change in a GPU command besides appending --cpu: model size and length
#: of the run (passed as the train step's extra fairseq flags, which replace the recipe's
#: in place), and the averaging window the evaluation reads (``--avg-epochs 1-2``). The
#: published batches are one to two updates per epoch of the test corpus, so the loss
#: scaler starts where these tiny models' gradients fit: the few steps are updates, not
#: overflows. The overflow path has a test of its own (the IWSLT'14 run starts at 2**20).
TEST_SIZE = [
    "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
    "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
    "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
    "--warmup-updates", "4", "--fp16-init-scale", "4",
]  # fmt: skip
EVAL_LENGTH = ["--max-len-a", "0", "--max-len-b", "12"]  # untrained models: short outputs


def gpu_command(data, run, method, batch, gpus=1, depth="2-2", extra=()):
    """``(commands, info)`` a GPU user gets, each command with ``--cpu`` appended."""
    args = _args(["--data", str(data), "--method", method, "--depth", depth, "--batch", batch,
                  "--gpus", str(gpus), "--save-dir", str(run), "--avg-epochs", "1-2",
                  "--log-interval", "1"], [*TEST_SIZE, *extra])  # fmt: skip
    commands, info = plan.build(args, env={})
    return [[*command, "--cpu"] for command in commands], info


def train_gpu_command(data, run, method, batch, **kwargs):
    commands, info = gpu_command(data, run, method, batch, **kwargs)
    lines = []
    shim = {k: gpu_on_cpu.ENV[k] for k in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    code = train.run(commands, info, on_line=lines.append, env_extra=dict(shim, OMP_NUM_THREADS="1"))
    log = "".join(lines)
    assert code == 0, log[-5000:]
    inner = [stats for _, stats in fairseq_log.records(log.splitlines(), "train_inner")]
    assert inner and all(math.isfinite(float(x["loss"])) for x in inner), log[-3000:]
    # TensorBoard logs by default, in the run folder (rank 0 writes them)
    assert list((Path(run) / "tensorboard" / "train_inner").glob("events.out.tfevents.*")), log[-3000:]
    return commands, info, log


def evaluate_and_convert(data, run, tmp_path):
    record = evaluate.evaluate(run, cpu=True, generate_args=EVAL_LENGTH, log=lambda *_: None)
    assert record["checkpoints"] == ["checkpoint1.pt", "checkpoint2.pt"]
    assert record["bleu"] >= 0 and record["tokenized_bleu"] >= 0 and record["chrf"] >= 0
    from admin_fairseq import ct2

    out = tmp_path / "ct2"
    ct2.convert(run / "eval" / "averaged.pt", out, data=Path(data) / "bin", log=lambda *_: None)
    assert (out / "model.bin").stat().st_size > 0
    return record


def state(run):

    return read_checkpoint(run / "checkpoint_last.pt")
