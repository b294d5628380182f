"""Validation's cost options: VAPL's ``val_n_masks`` and the trainer's ``check_val_every_n_epoch``
(with the checkpoint policy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from datamodules.synthetic import SyntheticDataModule
from vapl.methods import VAPL, Baseline
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


def test_val_n_masks_leaves_vapl1s_expected_attention_as_it_is():
    batch = next(iter(_trainer_free_loader()))
    plain, cheaper = (_model(use_refinement=False, **extra) for extra in ({}, {"val_n_masks": 4}))
    with cheaper._validation_masks():
        reduced = cheaper.refined_prompts(batch)
    torch.testing.assert_close(reduced, plain.refined_prompts(batch), rtol=0, atol=0)


def _trainer_free_loader():  # type: ignore[no-untyped-def]
    data = _data()
    data.setup("validate")
    return data.val_dataloader()


def test_validation_every_second_epoch_keeps_last_every_epoch_and_the_best_of_validated_ones(
    tmp_path: Path,
):
    # 2 epochs of network updates in F and G phases of one epoch: the trainer runs 4 (F G F G)
    model = _model(val_n_masks=4, f_epochs=1, g_epochs=1)
    validated: list[int] = []
    checkpoint = RunCheckpoint(dirpath=str(tmp_path))
    trainer = _trainer(
        max_epochs=2,
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


# ----- the explanation metrics reuse the step's forward pass ------------------------------------
def _validate(model, without_reuse: bool = False) -> tuple[dict[str, float], int]:  # type: ignore[no-untyped-def]
    """Validation metrics and how often the unprompted network ran."""
    network = model.unprompted_model if isinstance(model, VAPL) else model.model
    calls = []
    network.body[0].register_forward_hook(lambda *args: calls.append(1))  # the first conv
    if without_reuse:
        step = model.validation_step

        def recomputing(batch, batch_idx):  # type: ignore[no-untyped-def]
            out = step(batch, batch_idx)
            out.pop("feature_maps")
            return out

        model.validation_step = recomputing  # type: ignore[method-assign]
    metrics = _trainer().validate(model, datamodule=_data(), verbose=False)[0]
    return metrics, len(calls)


@pytest.mark.parametrize("method", ["vapl", "baseline"])
def test_explanation_metrics_reuse_the_steps_feature_maps_with_the_same_scores(method):
    def make():  # type: ignore[no-untyped-def]
        seed_everything(0)
        if method == "vapl":
            return _model()
        return Baseline(in_channels=1, backbone="tiny")

    reused, calls = _validate(make())
    recomputed, recomputed_calls = _validate(make(), without_reuse=True)
    assert "val/unprompted/iou" in reused and "val/unprompted/pointing" in reused
    if method == "vapl":
        assert "val/prompted/iou" in reused
    assert calls == 1 and recomputed_calls == 2  # one validation batch of 8
    assert reused.keys() == recomputed.keys()
    for key, value in recomputed.items():
        assert reused[key] == pytest.approx(value, abs=1e-6), key


def test_without_prompts_the_prompted_prediction_is_the_unprompted_one():
    data = _data()
    data.setup("validate")
    batch = torch.utils.data.default_collate([data.datasets["val"][i] for i in range(4)])
    batch["has_prompt"] = torch.tensor([False, True, False, False])
    model = _model().eval()
    with torch.no_grad():
        out = model.predict_both(batch)
        none = model.predict_both({**batch, "has_prompt": torch.zeros(4, dtype=torch.bool)})
    keep = ~batch["has_prompt"]
    assert torch.equal(out["prompted_probs"][keep], out["unprompted_probs"][keep])
    assert out["feature_maps"]["prompted"].shape[0] == 1
    assert torch.equal(none["prompted_probs"], none["unprompted_probs"])
    image = batch["image"][1:2] * out["refined_prompt"][1:2, None]
    expected = torch.softmax(model.prompted_model(image), dim=1)
    torch.testing.assert_close(out["prompted_probs"][1:2], expected)
