"""Tiny trainers, data and models: the shared set-up of tests, benchmarks and smoke runs.

A test or benchmark that trains something starts from these and overrides what it measures, so the
quiet trainer settings and the sizes that keep a CPU run in seconds live in one place.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer

from datamodules.synthetic import SyntheticDataModule
from vapl.methods import VAPL

#: A trainer that prints and writes nothing: no logger, checkpoints, progress bar or summary.
QUIET_TRAINER: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}
#: Demo data small enough for a test: 24 / 8 / 16 images of 16 x 16 pixels, batches of 8.
TINY_DATA: dict[str, Any] = {
    "n_train": 24,
    "n_val": 8,
    "n_test": 16,
    "image_size": 16,
    "batch_size": 8,
}
#: Every method on the demo data's one channel, with the tiny CNN.
TINY_METHOD: dict[str, Any] = {"num_classes": 2, "in_channels": 1, "backbone": "tiny"}
#: VAPL's own settings on top: few masks, short phases.
TINY_VAPL: dict[str, Any] = {"n_masks": 8, "chunk_size": 16}


def tiny_trainer(**overrides: Any) -> Trainer:
    """A quiet CPU :class:`~lightning.pytorch.Trainer` (:data:`QUIET_TRAINER` plus overrides)."""
    return Trainer(**{**QUIET_TRAINER, **overrides})


def tiny_data(**overrides: Any) -> SyntheticDataModule:
    """The demo datamodule at :data:`TINY_DATA`'s size, plus overrides."""
    return SyntheticDataModule(**{**TINY_DATA, **overrides})


def tiny_method(method: type[LightningModule] = VAPL, **overrides: Any) -> LightningModule:
    """``method`` on the tiny CNN for the demo data (VAPL with :data:`TINY_VAPL` too)."""
    settings = {**TINY_METHOD, **(TINY_VAPL if issubclass(method, VAPL) else {})}
    return method(**{**settings, **overrides})
