"""Shared test settings: two cores, no network logging, tiny models."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_wandb_leak():
    """A test that sets W&B variables (WandbLogger(offline=True) does) must not leak them."""
    before = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    yield
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        if key not in before:
            del os.environ[key]
    os.environ.update(before)
