"""Validation's cost options: VAPL's ``val_n_masks`` and the trainer's ``check_val_every_n_epoch``
(with the checkpoint policy)."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

from datamodules.synthetic import SyntheticDataModule
from vapl.methods import VAPL
from vapl.training.checkpoints import RunCheckpoint


def _data() -> SyntheticDataModule:
    return SyntheticDataModule(n_train=16, n_val=8, n_test=8, image_size=16, batch_size=8)


def _model(**kwargs) -> VAPL:  # type: ignore[no-untyped-def]
    seed_everything(0)
    return VAPL(in_channels=1, backbone="tiny", n_masks=12, f_steps=2, g_steps=2, **kwargs)


def _trainer(**kwargs) -> Trainer:  # type: ignore[no-untyped-def]
    settings = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return Trainer(**{**settings, **kwargs})


def _record_samplers(model: VAPL) -> list[tuple[int, bool]]:
    """``(N, balanced)`` of every scoring call."""
    seen: list[tuple[int, bool]] = []
    score = model.refiner.score

    def recorded(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((model.refiner.sampler.n_masks, model.refiner.sampler.balanced))
        return score(*args, **kwargs)

    model.refiner.score = recorded  # type: ignore[method-assign]
    return seen


def test_validation_draws_val_n_masks_balanced_masks_and_test_keeps_the_full_setting():
    model = _model(val_n_masks=4)
    seen = _record_samplers(model)
    _trainer().validate(model, datamodule=_data(), verbose=False)
    assert seen and set(seen) == {(4, True)}
    seen.clear()
    _trainer().test(model, datamodule=_data(), verbose=False)
    assert seen and set(seen) == {(12, False)}
    seen.clear()
    _trainer(max_steps=1, limit_val_batches=0).fit(model, datamodule=_data())
    assert set(seen) == {(12, False)}  # training scores with N as well


def test_without_val_n_masks_validation_scores_like_training():
    model = _model()
    seen = _record_samplers(model)
    _trainer().validate(model, datamodule=_data(), verbose=False)
    assert set(seen) == {(12, False)}


def test_validation_every_second_epoch_keeps_last_every_epoch_and_the_best_of_validated_ones(
    tmp_path: Path,
):
    model = _model(val_n_masks=4)
    validated: list[int] = []
    checkpoint = RunCheckpoint(dirpath=str(tmp_path))
    trainer = _trainer(
        max_epochs=4,
        check_val_every_n_epoch=2,
        num_sanity_val_steps=0,
        enable_checkpointing=True,
        callbacks=[checkpoint],
    )
    original = model.validation_step

    def counted(batch, batch_idx):  # type: ignore[no-untyped-def]
        if batch_idx == 0:
            validated.append(trainer.current_epoch)
        return original(batch, batch_idx)

    model.validation_step = counted  # type: ignore[method-assign]
    trainer.fit(model, datamodule=_data())
    assert validated == [1, 3]
    assert checkpoint.best_epoch in (1, 3)
    last = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert last["epoch"] == 3 and last["global_step"] == 8
    assert {p.name for p in tmp_path.iterdir()} == {
        f"best-epoch={checkpoint.best_epoch}.ckpt",
        "last.ckpt",
    }
