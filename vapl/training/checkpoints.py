"""The checkpoints a vapl run keeps: its best validation epoch, for testing, and ``last.ckpt``, for
resuming; nothing else.

:class:`RunCheckpoint` (the ``vapl`` command adds it to every run; ``--checkpoint.*`` sets it):

* ``last.ckpt``: the full state (networks, optimisers, loops, callbacks) at the end of every
  ``last_every_n_epochs``-th epoch, at the end of training, and when the run is interrupted
  (Ctrl-C, SIGTERM) in the middle of an epoch. It is written to a temporary file and renamed, so an
  interrupted write never leaves a broken ``last.ckpt``. ``vapl fit ... --ckpt_path last`` resumes
  from it in the same run folder.
* ``best-epoch=E.ckpt``: the epoch whose validation ``monitor`` was best (default: the method's
  :attr:`~vapl.methods.base.MethodModule.selection_metric`, e.g. ``val/prompted/acc`` for VAPL,
  ``val/acc`` for single-model methods; the minimum for a loss, else the maximum). It is a hard
  link to the ``last.ckpt`` written at the end of that epoch: keeping it costs no write (a copy
  where the file system has no hard links). The previous best is removed.

So an epoch writes one full checkpoint at most (docs/performance.md says what it costs). The best
checkpoint holds the weights at the end of the epoch whose validation was best; ``vapl fit-test``
tests it. Writes happen on rank 0 under DDP; every process takes the same decisions.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

LAST = "last.ckpt"
BEST_PREFIX = "best-epoch="
#: Exceptions after which the run's state is consistent and worth saving.
INTERRUPTIONS = (KeyboardInterrupt, SIGTERMException)


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` for resuming and the best validation epoch for testing (module docstring).

    Args:
        monitor: the validation metric that selects the best epoch; ``None``: the method's
            ``selection_metric``.
        mode: ``max`` or ``min``; ``None``: ``min`` for a loss, else ``max``.
        dirpath: where the checkpoints go; ``None``: ``RUN_FOLDER/checkpoints``.
        last_every_n_epochs: write ``last.ckpt`` every this many epochs (and on a new best, at the
            end of training and on an interruption).
        save_on_interrupt: write ``last.ckpt`` when Ctrl-C or SIGTERM stops the run mid-epoch.
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: str | None = None,
        dirpath: str | None = None,
        last_every_n_epochs: int = 1,
        save_on_interrupt: bool = True,
    ) -> None:
        if last_every_n_epochs < 1:
            raise ValueError(f"last_every_n_epochs must be at least 1, got {last_every_n_epochs}")
        if mode not in (None, "min", "max"):
            raise ValueError(f"mode is 'min' or 'max', got {mode!r}")
        super().__init__(
            dirpath=dirpath,
            monitor=monitor,
            mode=mode or _mode_for(monitor),
            save_last=True,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        self._explicit_mode = mode
        self.last_every_n_epochs = last_every_n_epochs
        self.save_on_interrupt = save_on_interrupt
        self.best_epoch: int | None = None
        self._pending_best: tuple[float, int] | None = None

    # ----- set-up -----------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.monitor is None:
            self.monitor = getattr(pl_module, "selection_metric", None)
            if self.monitor is not None:
                self._set_mode(self._explicit_mode or _mode_for(self.monitor))
        with warnings.catch_warnings():  # a resumed run's folder has checkpoints: expected
            warnings.filterwarnings("ignore", ".*exists and is not empty.*")
            super().setup(trainer, pl_module, stage)

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        self.kth_value = torch.tensor(math.inf if mode == "min" else -math.inf)

    @property
    def last_path(self) -> str:
        return os.path.join(str(self.dirpath), LAST)

    # ----- when to write ----------------------------------------------------------------------
    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        """No checkpoints inside an epoch (``on_exception`` saves an interrupted one)."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Note a new best; it is written with ``last.ckpt`` at the end of the epoch."""
        if trainer.sanity_checking or self._skip(trainer) or self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            warnings.warn(
                f"RunCheckpoint: the validation metrics have no {self.monitor!r} "
                f"(have: {', '.join(sorted(trainer.callback_metrics)) or 'none'}); "
                "no best checkpoint is kept. Set --checkpoint.monitor to a logged key.",
                stacklevel=2,
            )
            return
        score = float(value)
        if math.isnan(score):
            return
        pending = self._pending_best[0] if self._pending_best else None
        for previous in (self.best_model_score, pending):
            if previous is not None and not self._better(score, float(previous)):
                return
        self._pending_best = (score, trainer.current_epoch)

    def _better(self, score: float, than: float) -> bool:
        return score < than if self.mode == "min" else score > than

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._skip(trainer):
            return
        periodic = (trainer.current_epoch + 1) % self.last_every_n_epochs == 0
        if periodic or self._pending_best is not None:
            self._write_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._skip(trainer):
            self._write_last(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """An interrupted run saves ``last.ckpt`` (rank 0 alone: the other processes may be
        elsewhere; nothing here waits for them)."""
        if not (self.save_on_interrupt and isinstance(exception, INTERRUPTIONS)):
            return
        if self.dirpath is None or trainer.sanity_checking or self._skip(trainer):
            return
        self._pending_best = None  # the epoch did not end: its validation, if any, is stale
        self.last_model_path = self.last_path
        if trainer.is_global_zero:
            checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            _align_logging_step(checkpoint)
            temporary = self.last_path + ".partial"
            trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, temporary)
            os.replace(temporary, self.last_path)
            rank_zero_info(
                f"Interrupted: saved {self.last_path} (epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}). Resume with the same command and --ckpt_path last."
            )
        self._last_global_step_saved = trainer.global_step

    def _skip(self, trainer: Trainer) -> bool:
        from lightning.pytorch.trainer.states import TrainerFn

        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != TrainerFn.FITTING
            or self._last_global_step_saved == trainer.global_step
        )

    # ----- writing ------------------------------------------------------------------------------
    def _write_last(self, trainer: Trainer) -> None:
        """``last.ckpt`` (through a temporary file), and the best as a hard link to it."""
        best = self._pending_best
        self._pending_best = None
        previous_best = self.best_model_path
        if best is not None:
            score, epoch = best
            path = os.path.join(str(self.dirpath), f"{BEST_PREFIX}{epoch}.ckpt")
            self.best_model_path = self.kth_best_model_path = path
            self.best_model_score = self.kth_value = torch.tensor(score)
            self.best_k_models = {path: self.best_model_score}
            self.best_epoch = epoch
        self.last_model_path = self.last_path
        temporary = self.last_path + ".partial"
        trainer.save_checkpoint(temporary, weights_only=False)  # every rank: it synchronises
        if trainer.is_global_zero:
            os.replace(temporary, self.last_path)
            if best is not None:
                _link_or_copy(self.last_path, self.best_model_path)
                if previous_best and previous_best != self.best_model_path:
                    Path(previous_best).unlink(missing_ok=True)
        trainer.strategy.barrier("RunCheckpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = self.last_path
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    # ----- state (survives a resume) ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_epoch = state_dict.get("best_epoch")

    def describe(self) -> dict[str, Any]:
        """What ``ckpt_path="best"`` loads: ``{"checkpoint": "best", "epoch", "monitor",
        "score", "path"}``, or ``{"checkpoint": "last"}`` when no validation chose one."""
        if not self.best_model_path:
            return {"checkpoint": "last", "monitor": self.monitor}
        return {
            "checkpoint": "best",
            "epoch": self.best_epoch,
            "monitor": self.monitor,
            "score": None if self.best_model_score is None else float(self.best_model_score),
            "path": self.best_model_path,
        }


def _align_logging_step(checkpoint: dict[str, Any]) -> None:
    """A checkpoint taken inside a training batch: Lightning's restore adds one to the count of
    batches that stepped (it assumes the counter was saved before the batch's increment, as at
    ``on_train_batch_end``), which shifts the logging step of the resumed run by one. Take that
    one off here, so the resumed log's steps are the uninterrupted run's."""
    try:
        loop = checkpoint["loops"]["fit_loop"]
        total = loop["epoch_loop.batch_progress"]["total"]
        counts = (total["ready"], total["started"], total["processed"], total["completed"])
        state = loop["epoch_loop.state_dict"]
    except (KeyError, TypeError):
        return
    ready, started, processed, completed = counts
    at_batch_end = ready == started == processed == completed + 1
    between_batches = ready == started == processed == completed
    if not (at_batch_end or between_batches) and state.get("_batches_that_stepped", 0) > 0:
        state["_batches_that_stepped"] -= 1


def _mode_for(monitor: str | None) -> str:
    """``min`` for a loss, else ``max``."""
    return "min" if monitor is not None and "loss" in monitor else "max"


def _link_or_copy(source: str, target: str) -> None:
    if os.path.lexists(target):
        os.remove(target)
    try:
        os.link(source, target)
    except OSError:  # no hard links on this file system
        shutil.copyfile(source, target)
