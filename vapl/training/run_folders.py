"""Run folders across interruptions: a resumed run continues in its own folder, and a run that
fails before it wrote anything leaves no folder behind.

A run folder is ``SAVE_DIR/NAME/version_N`` (the first logger's, as Lightning's checkpoint callback
resolves it) with ``checkpoints/``, ``metrics.csv``, ``hparams.yaml`` and ``config.yaml``.

* :func:`resume_in_run_folder`: ``vapl fit ... --ckpt_path last`` takes the newest
  ``*/checkpoints/last.ckpt`` under ``SAVE_DIR/NAME``; a checkpoint path inside a run folder
  names that folder. The first logger is pointed at that folder (no new ``version_N``), the CSV
  log keeps the rows logged before the checkpoint, and ``config.yaml`` is rewritten.
* :func:`remove_unused_run_folder`: after a failure, the run's folder is removed if it holds
  nothing but ``hparams.yaml``, ``config.yaml``, a ``metrics.csv`` without rows and empty folders.
"""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch import Trainer
from lightning.pytorch.cli import SaveConfigCallback

from vapl.training.checkpoints import LAST

#: Files a run writes before it has trained: a folder holding only these is unused.
SETUP_FILES = ("hparams.yaml", "config.yaml")


def _versioned_logger(trainer: Trainer) -> Any | None:
    """The first logger, if its run folder is a ``version`` under ``save_dir/name`` (CSV,
    TensorBoard): the logger whose folder holds the checkpoints."""
    if not trainer.loggers:
        return None
    logger = trainer.loggers[0]
    return logger if hasattr(logger, "_version") and hasattr(logger, "log_dir") else None


def runs_root(trainer: Trainer) -> Path | None:
    """The folder whose subfolders are the run folders (``save_dir/name``), as Lightning's
    checkpoint callback resolves it; ``None`` without a versioned logger."""
    logger = _versioned_logger(trainer)
    if logger is None:
        return None
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name)


def newest_last_checkpoint(root: Path) -> Path | None:
    """The most recently written ``*/checkpoints/last.ckpt`` under ``root``."""
    found = [p for p in root.glob(f"*/checkpoints/{LAST}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resume_in_run_folder(trainer: Trainer, ckpt_path: str) -> str:
    """Point the trainer's first logger at the run folder of ``ckpt_path`` (``"last"`` or a
    file); return the checkpoint file to load (``ckpt_path`` unchanged when there is no run
    folder to continue, e.g. ``--ckpt_path last`` before any checkpoint, which then starts
    afresh with Lightning's warning)."""
    root = runs_root(trainer)
    if root is None or ckpt_path in ("best", "hpc", "registry"):
        return ckpt_path
    path = newest_last_checkpoint(root) if ckpt_path == "last" else Path(ckpt_path)
    if path is None or not path.is_file():
        return ckpt_path
    folder = path.resolve().parent.parent
    if path.parent.name != "checkpoints" or folder.parent != root.resolve():
        return ckpt_path  # a checkpoint from elsewhere: a new run folder
    logger = _versioned_logger(trainer)
    logger._version = folder.name  # a string version is the folder's name
    if trainer.is_global_zero:
        _keep_csv_rows(logger, folder, path)
    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback):
            callback.overwrite = True  # the resumed run's config replaces the interrupted one's
    return str(path)


def _keep_csv_rows(logger: Any, folder: Path, checkpoint: Path) -> None:
    """Lightning's CSV logger empties an existing ``metrics.csv``: give it back the rows logged
    before the checkpoint (``step`` below its global step), so the log reads like one run."""
    metrics = folder / _ExperimentWriter.NAME_METRICS_FILE
    if not metrics.is_file():
        return
    state = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
    global_step = int(state.get("global_step", 0))
    with metrics.open(newline="") as handle:
        rows = [
            {k: v for k, v in row.items() if k and v != ""}
            for row in csv.DictReader(handle)
            if _below(row.get("step"), global_step)
        ]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")
        writer = logger.experiment
    if isinstance(writer, _ExperimentWriter):
        writer.metrics = [*rows, *writer.metrics]


def _below(step: str | None, limit: int) -> bool:
    try:
        return int(float(step or "")) < limit
    except ValueError:
        return False


def remove_unused_run_folder(trainer: Trainer | None) -> None:
    """Remove each versioned logger's run folder if the run wrote nothing of its own to it."""
    if trainer is None or not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        if getattr(logger, "_version", None) is None:
            continue  # a version never chosen: no folder was made
        log_dir = getattr(logger, "log_dir", None)
        if not log_dir:  # a logger without a folder of its own (W&B keeps its own)
            continue
        folder = Path(log_dir)
        if folder.is_dir() and _unused(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _unused(folder: Path) -> bool:
    for path in folder.rglob("*"):
        if path.is_dir():
            continue
        if path.parent == folder and path.name in SETUP_FILES:
            continue
        if path.parent == folder and path.name == _ExperimentWriter.NAME_METRICS_FILE:
            with path.open() as handle:
                if sum(1 for _ in handle) <= 1:  # a header at most
                    continue
        return False
    return True
