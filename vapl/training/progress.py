"""Progress as whole lines when the output is not a terminal (a log file, a pipe, CI).

Lightning's progress bars redraw a line many times a second; written to a file, each redraw stays,
and ``make demo > log 2>&1`` was 70 KB of bars. :class:`PlainProgressBar` prints one line per
training epoch (time, the progress-bar metrics and the validation accuracies), one per
evaluation, and within a long epoch a line every ``interval`` seconds. The ``vapl`` command uses it instead of the bars whenever
standard error is not a terminal (:func:`wants_plain_progress`).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn


def wants_plain_progress(stream: TextIO | None = None) -> bool:
    """Whether progress should be plain lines: ``stream`` (standard error) is not a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def _standalone_validation(trainer: Trainer) -> bool:
    """``vapl validate``, not the validation inside ``fit`` (whose time is the epoch's line)."""
    return trainer.state.fn == TrainerFn.VALIDATING


def _total(batches: Any, dataloader_idx: int) -> int | float:
    """The batch count of one evaluation dataloader (Lightning keeps a list, one per loader)."""
    return batches[dataloader_idx] if isinstance(batches, list) else batches


def _format_value(value: Any) -> str:
    number = float(value) if hasattr(value, "__float__") else math.nan
    if math.isnan(number):
        return str(value)
    return f"{number:.4g}"


class PlainProgressBar(ProgressBar):
    """Progress as whole lines (module docstring); ``interval``: seconds between lines within an
    epoch or evaluation (0: only the line at its end)."""

    def __init__(self, interval: float = 30.0, stream: TextIO | None = None) -> None:
        super().__init__()
        self.interval = interval
        self.stream = stream
        self._enabled = True
        self._started = 0.0
        self._last = 0.0
        self._done = 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            print(*args, file=self.stream or sys.stderr, flush=True, **kwargs)

    # ----- timing -----------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = self._last = time.perf_counter()
        self._done = 0

    def _elapsed(self) -> float:
        return time.perf_counter() - self._started

    def _batch_done(self, what: str, batch_idx: int, total: int | float) -> None:
        self._done = batch_idx + 1
        now = time.perf_counter()
        if self.interval and now - self._last >= self.interval:
            self._last = now
            of = f"/{int(total)}" if math.isfinite(total) else ""
            self.print(f"{what}: batch {self._done}{of} ({self._elapsed():.0f} s)")

    # ----- training ---------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start()

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self._batch_done(f"epoch {trainer.current_epoch + 1}", batch_idx, self.total_train_batches)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epochs = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics.update(  # the validation accuracies, which no progress bar shows
            (key, value)
            for key, value in trainer.callback_metrics.items()
            if key.startswith("val/") and key.endswith("/acc")
        )
        shown = ", ".join(f"{key} {_format_value(value)}" for key, value in metrics.items())
        self.print(
            f"epoch {trainer.current_epoch + 1}{epochs}: {self._done} batches in "
            f"{self._elapsed():.0f} s" + (f" | {shown}" if shown else "")
        )

    # ----- evaluation (validation inside fit is part of the epoch's line) ----------------------
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if _standalone_validation(trainer):
            self._start()

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        if _standalone_validation(trainer):
            self._batch_done(
                "validation", batch_idx, _total(trainer.num_val_batches, dataloader_idx)
            )

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if _standalone_validation(trainer):
            self.print(f"validation: {self._done} batches in {self._elapsed():.0f} s")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start()

    def on_test_batch_end(
        self, trainer: Trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        self._batch_done("test", batch_idx, _total(trainer.num_test_batches, dataloader_idx))

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.print(f"test: {self._done} batches in {self._elapsed():.0f} s")

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start()

    def on_predict_batch_end(
        self, trainer: Trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[no-untyped-def]
        self._batch_done("predict", batch_idx, _total(trainer.num_predict_batches, dataloader_idx))

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.print(f"predict: {self._done} batches in {self._elapsed():.0f} s")
