"""A callback for the interruption tests: the process sends itself SIGINT (Ctrl-C) at the start
of a chosen training batch. Importable by a ``vapl`` subprocess from this folder."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback


class InterruptAt(Callback):
    """SIGINT to this process at the start of batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int = 1, batch: int = 1) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGINT)
