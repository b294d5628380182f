"""Shared test settings: one thread, no W&B variables leaking, and factories of tiny trainers,
data and models (:mod:`vapl.training.tiny`, which the benchmarks use too)."""

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


@pytest.fixture
def tiny_trainer():
    """Factory of quiet CPU trainers (:func:`vapl.training.tiny.tiny_trainer`)."""
    from vapl.training.tiny import tiny_trainer

    return tiny_trainer


@pytest.fixture
def tiny_data():
    """Factory of tiny demo datamodules (:func:`vapl.training.tiny.tiny_data`)."""
    from vapl.training.tiny import tiny_data

    return tiny_data


@pytest.fixture
def tiny_method():
    """Factory of methods on the tiny CNN (:func:`vapl.training.tiny.tiny_method`)."""
    from vapl.training.tiny import tiny_method

    return tiny_method
