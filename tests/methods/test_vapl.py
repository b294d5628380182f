from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from datamodules.synthetic import SyntheticDataModule
from vapl.core.prompts import PRECLUDED
from vapl.methods import VAPL


def _data(**kwargs) -> SyntheticDataModule:
    settings = dict(n_train=24, n_val=8, n_test=16, image_size=16, batch_size=8)
    return SyntheticDataModule(**{**settings, **kwargs})


def _model(**kwargs) -> VAPL:
    settings = dict(
        num_classes=2,
        in_channels=1,
        backbone="tiny",
        n_masks=8,
        chunk_size=16,
        lr=1e-2,
        f_steps=2,
        g_steps=2,
    )
    return VAPL(**{**settings, **kwargs})


def _trainer(**kwargs) -> Trainer:
    settings = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    return Trainer(**{**settings, **kwargs})


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


class _PhaseRecorder(Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[str, set[str]]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.phase, self.before = module.phase, _snapshot(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps.append((self.phase, _changed(self.before, _snapshot(module))))


def test_alternation_freezes_g_in_the_f_phase_and_the_networks_in_the_g_phase():
    seed_everything(0)
    recorder = _PhaseRecorder()
    _trainer(max_steps=8, callbacks=[recorder]).fit(_model(), datamodule=_data())
    assert [phase for phase, _ in recorder.steps] == list("FFGGFFGG")
    for phase, changed in recorder.steps:
        networks = {k for k in changed if k.startswith(("prompted_model.", "unprompted_model."))}
        weight_fn = {k for k in changed if k.startswith("refiner.")}
        if phase == "F":
            assert networks and not weight_fn
        else:
            assert weight_fn and not networks  # batch-norm statistics included
    assert not any(k.startswith("metrics.") for _, c in recorder.steps for k in c if ".weight" in k)


def test_ablations_without_a_learned_g_never_enter_the_g_phase():
    for flags in ({"use_weight_fn": False}, {"use_refinement": False}):
        model = _model(**flags)
        assert model.refiner.weight_fn is None and len(model.configure_optimizers()) == 1
        model.cycle_position = 3
        assert model.phase == "F"


def test_without_refinement_f_m_sees_the_image_with_precluded_pixels_removed():
    data = _data()
    data.setup()
    batch = torch.utils.data.default_collate([data.datasets["test"][i] for i in range(4)])
    attention = _model(use_refinement=False).refined_prompts(batch)
    assert torch.equal(attention, (batch["prompt"] != PRECLUDED).float())


def _fit(max_epochs: int, ckpt_path: str | None = None, save_to: str | None = None) -> VAPL:
    seed_everything(0)
    model = _model(f_steps=2, g_steps=2)
    trainer = _trainer(max_epochs=max_epochs)
    trainer.fit(model, datamodule=_data(), ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return model


def test_a_run_resumed_from_a_mid_cycle_checkpoint_ends_like_an_uninterrupted_one(tmp_path):
    # 24 samples / batch 8 = 3 batches an epoch; a cycle is 2 F + 2 G batches, so the end of
    # epoch 1 is the middle of a G phase.
    uninterrupted = _fit(max_epochs=3)
    first = _fit(max_epochs=1, save_to=str(tmp_path / "mid.ckpt"))
    assert first.cycle_position == 3 and first.phase == "G"
    resumed = _fit(max_epochs=3, ckpt_path=str(tmp_path / "mid.ckpt"))
    assert resumed.cycle_position == uninterrupted.cycle_position == 9
    expected, actual = uninterrupted.state_dict(), resumed.state_dict()
    for key, value in expected.items():
        if value.is_floating_point():
            assert torch.allclose(actual[key], value, atol=1e-5, rtol=0), key
        else:
            assert torch.equal(actual[key], value), key
    assert _changed(_snapshot(first), expected)  # the comparison is not between untouched models


def _predictions(model: VAPL, data: SyntheticDataModule) -> list[dict]:
    return _trainer().predict(model, datamodule=data)


def test_permuting_test_labels_changes_no_prompted_prediction():
    seed_everything(0)
    model = _model()
    _trainer(max_steps=6).fit(model, datamodule=_data())
    original = _data(predict_split="test")
    permuted = _data(predict_split="test")
    permuted.setup()
    labels = permuted.datasets["test"].labels
    permuted.datasets["test"].labels = labels[torch.randperm(len(labels))]
    assert not torch.equal(permuted.datasets["test"].labels, labels)
    for a, b in zip(_predictions(model, original), _predictions(model, permuted)):
        assert torch.equal(a["prompted_pred"], b["prompted_pred"])
        assert torch.equal(a["prompted_probs"], b["prompted_probs"])
        assert torch.equal(a["refined_prompt"], b["refined_prompt"])


def test_prediction_uses_f_o_for_samples_without_a_prompt():
    data = _data(prompt_fraction=0.5)
    data.setup()
    batch = torch.utils.data.default_collate([data.datasets["test"][i] for i in range(8)])
    model = _model().eval()
    with torch.no_grad():
        out = model.predict_both(batch)
    without = ~batch["has_prompt"]
    assert bool(without.any()) and bool(batch["has_prompt"].any())
    assert torch.equal(out["prompted_probs"][without], out["unprompted_probs"][without])
    assert bool((out["refined_prompt"][without] == 1).all())


def test_f_o_starts_as_a_copy_of_f_m():
    model = _model()
    for (name, a), (_, b) in zip(
        model.prompted_model.state_dict().items(), model.unprompted_model.state_dict().items()
    ):
        assert torch.equal(a, b), name


def test_bad_phase_lengths_are_rejected():
    with pytest.raises(ValueError, match="f_steps"):
        _model(f_steps=0)


def test_a_g_phase_longer_than_an_epoch_scores_each_sample_once():
    # 16 samples / batch 8 = 2 batches an epoch; a G phase of 4 batches sees every sample twice.
    seed_everything(0)
    model = _model(f_steps=1, g_steps=4)
    scored_in_g: list[int] = []
    original = model._target_scores

    def counting(batch, rows, targets, epoch):
        if model.phase == "G":
            scored_in_g.append(len(rows))
        return original(batch, rows, targets, epoch)

    model._target_scores = counting
    _trainer(max_steps=5).fit(model, datamodule=_data(n_train=16))
    assert sum(scored_in_g) == 16
