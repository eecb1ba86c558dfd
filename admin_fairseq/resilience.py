"""What keeps a long run alive on a shared cluster, installed by :mod:`admin_fairseq.launch` in
each worker it starts (the train step's workers; a plain ``fairseq-train`` gets none of it):

- **Save and stop on a signal.** SIGUSR1 (Slurm sends it before the time limit, with the job
  script's ``--signal=USR1@600``, or when told to with ``scancel --signal=USR1``) and SIGTERM
  (preemption) ask every worker to finish the update it is in, save ``checkpoint_last.pt``
  and exit with :data:`EXIT_SAVED`. The workers agree on the update first (one all-reduce of
  a flag per update), so all of them stop after the same one; the train step reports it and
  the Slurm job script requeues the job, which resumes from that checkpoint.
- **A bounded hang.** A host that vanishes without closing its connections (power, kernel,
  network, frozen processes) leaves the others waiting inside a collective for the backend's
  timeout (30 minutes on gloo and NCCL). A watchdog thread ends this worker with
  :data:`EXIT_HUNG` and a message naming the likely cause when no update, validation step or
  checkpoint has finished for ``--hang-timeout`` seconds (:data:`HANG_TIMEOUT` by default);
  running the same command again resumes from the last checkpoint.
"""

import os
import signal
import sys
import threading
import time

#: exit status of a worker (and of the train step) that saved checkpoint_last.pt on a signal
#: and stopped: run the same command again (the Slurm job script requeues itself) to resume
EXIT_SAVED = 75  # EX_TEMPFAIL
#: exit status of a worker that the watchdog ended
EXIT_HUNG = 124
#: seconds without progress before the watchdog ends a worker. The time between two updates
#: includes a validation and a checkpoint write (rank 0 writes while the others wait), so it
#: is far above them; the backends' own timeout is 30 minutes.
HANG_TIMEOUT = 600
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Watchdog:
    """Ends the process with :data:`EXIT_HUNG` when :meth:`alive` was not called for
    ``timeout`` seconds after the first call. Nothing runs before the first update (workers
    start, load data and build the model at their own pace)."""

    def __init__(self, timeout, rank, world_size, log=None):
        self.timeout, self.rank, self.world_size = timeout, rank, world_size
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.last = None
        self._thread = threading.Thread(target=self._watch, daemon=True, name="admin-fairseq-watchdog")

    def alive(self):
        first = self.last is None
        self.last = time.monotonic()
        if first:
            self._thread.start()

    def _watch(self):
        while True:
            time.sleep(min(5.0, self.timeout / 4))
            idle = time.monotonic() - self.last
            if idle > self.timeout:
                self.log(
                    f"[launch] rank {self.rank} of {self.world_size}: no update, validation or "
                    f"checkpoint finished for {idle:.0f} s (--hang-timeout {self.timeout:g}). The "
                    "likely cause: another worker's host was lost (power, kernel, network) or its "
                    "processes are frozen, and this worker waits for it inside a collective. "
                    f"Exiting with status {EXIT_HUNG} so that the job ends; run the same command "
                    "(or resubmit the job) to resume from checkpoint_last.pt"
                )
                os._exit(EXIT_HUNG)


class StopRequest:
    """Set by SIGUSR1/SIGTERM; :meth:`agreed` tells every worker, at the same update, whether
    any of them was signalled."""

    def __init__(self):
        self.signal = None
        self.pid = os.getpid()

    def install(self):
        for number in STOP_SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, number, frame):
        # fairseq's data loader forks its workers from this process: they inherit this
        # handler, and a signal sent to the whole job step must not end them (the loader
        # would then fail before the checkpoint is written)
        if os.getpid() != self.pid:
            return
        if self.signal is None:
            print(f"[launch] {signal.Signals(number).name} received: saving checkpoint_last.pt "
                  "after this update, then stopping", file=sys.stderr, flush=True)  # fmt: skip
        self.signal = number

    def agreed(self, trainer):
        """True on every worker when any was signalled (one all-reduce when there are several)."""
        return _any(trainer, self.signal is not None)


def _any(trainer, value):
    """``value`` or-ed over the workers (an all-reduce, which also waits for all of them)."""
    if trainer.data_parallel_world_size == 1:
        return value
    import torch

    from fairseq.distributed import utils as distributed_utils

    flag = torch.tensor([1.0 if value else 0.0], device=trainer.device)
    distributed_utils.all_reduce(flag, group=trainer.data_parallel_process_group)
    return bool(flag.item() > 0)


def install(rank, world_size, hang_timeout=HANG_TIMEOUT):
    """Wrap fairseq-train's loop in this process: the stop request is checked after every
    update; the watchdog (when ``hang_timeout`` > 0 and there are several workers) is fed by
    every update, validation step and checkpoint write. Call after the plugin is loaded and
    before ``fairseq_cli.train.cli_main``."""
    from fairseq import checkpoint_utils
    from fairseq.trainer import Trainer
    from fairseq_cli import train as fairseq_train

    stop = StopRequest()
    stop.install()
    watchdog = Watchdog(hang_timeout, rank, world_size) if hang_timeout > 0 and world_size > 1 else None

    def fed(method):
        def wrapper(*args, **kwargs):
            result = method(*args, **kwargs)
            watchdog.alive()
            return result

        return wrapper

    if watchdog is not None:
        Trainer.train_step = fed(Trainer.train_step)
        Trainer.valid_step = fed(Trainer.valid_step)
        Trainer.save_checkpoint = fed(Trainer.save_checkpoint)

    validate_and_save = fairseq_train.validate_and_save

    def checked(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch):
        if stop.agreed(trainer):
            updates = trainer.get_num_updates()
            checkpoint_utils.save_checkpoint(cfg.checkpoint, trainer, epoch_itr, None)
            _any(trainer, True)  # no worker exits before rank 0 has written the checkpoint
            why = signal.Signals(stop.signal).name if stop.signal else "another worker's signal"
            print(f"[launch] rank {rank}: checkpoint_last.pt saved at update {updates} ({why}); "
                  f"exiting with status {EXIT_SAVED}: run the same command again to resume",
                  file=sys.stderr, flush=True)  # fmt: skip
            sys.stdout.flush()
            os._exit(EXIT_SAVED)
        return validate_and_save(cfg, trainer, task, epoch_itr, valid_subsets, end_of_epoch)

    fairseq_train.validate_and_save = checked
    return stop, watchdog
