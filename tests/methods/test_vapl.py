from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.synthetic import SyntheticDataModule
from vapl.core.losses import activation_distance
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED
from vapl.core.schedule import phase_at
from vapl.methods import VAPL, Baseline


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
        phase_unit="batch",
        f_steps=2,
        g_steps=2,
        f_epochs=1,
        g_epochs=1,
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


def _test_batch(n: int = 4, **kwargs) -> dict:
    data = _data(**kwargs)
    data.setup()
    return torch.utils.data.default_collate([data.datasets["test"][i] for i in range(n)])


@pytest.mark.parametrize("normalization", ["paper", "total_weight", "max"])
def test_vapl1_by_default_gives_what_the_refinement_gives_with_uninformative_scores(normalization):
    """VAPL-1 isolates the learned weighting: its A is eq. 3 with equal scores. With balanced
    masks every undecided pixel is on in exactly k masks, so the refinement with constant scores
    is exactly that expectation."""
    batch = _test_batch()
    vapl1 = _model(use_refinement=False, normalization=normalization, n_masks=20, p=0.25)
    attention = vapl1.refined_prompts(batch)
    refiner = _model(
        use_weight_fn=False, normalization=normalization, n_masks=20, p=0.25, balanced_masks=True
    ).refiner
    constant = torch.full((len(batch["label"]), 20), 0.5)
    refined = refiner.refine_from_scores(constant * 2, batch["prompt"], list(range(4)))
    assert torch.allclose(attention, refined, atol=1e-6)
    prompt = batch["prompt"]
    if normalization != "paper":  # indispensable 1, undecided p, precluded 0
        assert bool((attention[prompt == INDISPENSABLE] == 1).all())
        assert torch.allclose(attention[prompt == UNDECIDED], torch.tensor(0.25))
    else:  # eq. 3 as it is, with g = 1: indispensable N / (N p), undecided 1
        assert torch.allclose(attention[prompt == INDISPENSABLE], torch.tensor(4.0))
        assert bool((attention[prompt == UNDECIDED] == 1).all())
    assert bool((attention[prompt == PRECLUDED] == 0).all())


def test_vapl1_can_keep_undecided_pixels_at_full_intensity():
    batch = _test_batch(prompt_fraction=0.5)
    attention = _model(use_refinement=False, unrefined_attention="keep_undecided").refined_prompts(
        batch
    )
    expected = torch.where(
        batch["has_prompt"][:, None, None], (batch["prompt"] != PRECLUDED).float(), 1.0
    )
    assert torch.equal(attention, expected)


class _EpochRecorder(Callback):
    """Per trainer epoch: the phase, the training batches, and which parameter groups moved."""

    def __init__(self) -> None:
        self.epochs: list[tuple[str, int, set[str]]] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        self.phase, self.batches, self.before = module.phase, 0, _snapshot(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches += 1

    def on_train_epoch_end(self, trainer, module) -> None:
        moved = {k.split(".")[0] for k in _changed(self.before, _snapshot(module))}
        self.epochs.append((self.phase, self.batches, moved - {"metrics"}))


def test_epoch_phases_give_the_networks_the_baselines_number_of_updates():
    # max_epochs=3 epochs of network updates in F phases of 2 epochs, each followed by a G phase
    # of 1 epoch: F F G F G, 5 trainer epochs, the last F phase cut short.
    seed_everything(0)
    recorder = _EpochRecorder()
    model = _model(phase_unit="epoch", f_epochs=2, g_epochs=1)
    trainer = _trainer(max_epochs=3, callbacks=[recorder])
    trainer.fit(model, datamodule=_data())
    assert [phase for phase, _, _ in recorder.epochs] == list("FFGFG")
    for phase, batches, moved in recorder.epochs:
        assert batches == 3  # 24 samples, batch 8: a G epoch is a whole pass too
        expected = {"prompted_model", "unprompted_model"} if phase == "F" else {"refiner"}
        assert moved == expected, (phase, moved)
    network_updates = sum(b for phase, b, _ in recorder.epochs if phase == "F")
    baseline = _trainer(max_epochs=3)
    baseline.fit(Baseline(num_classes=2, in_channels=1, backbone="tiny"), datamodule=_data())
    assert network_updates == baseline.global_step == 9
    assert trainer.current_epoch == 5  # the trainer ran the G epochs on top


def test_batch_phases_also_stop_the_networks_at_the_budget():
    # 3 batches an epoch, budget 2 epochs = 6 F batches in phases of 2 batches, G phases of 1:
    # ceil(2 * 3 / 2) = 3 trainer epochs = 9 batches, 6 F and 3 G.
    seed_everything(0)
    recorder = _PhaseRecorder()
    model = _model(phase_unit="batch", f_steps=2, g_steps=1)
    _trainer(max_epochs=2, callbacks=[recorder]).fit(model, datamodule=_data())
    assert "".join(phase for phase, _ in recorder.steps) == "FFGFFGFFG"


def _fit_with_checkpoints(unit: str, folder, ckpt_path: str | None = None) -> VAPL:
    seed_everything(0)
    lengths = dict(f_epochs=2, g_epochs=2) if unit == "epoch" else dict(f_steps=2, g_steps=2)
    model = _model(phase_unit=unit, **lengths)
    saver = ModelCheckpoint(dirpath=folder, every_n_epochs=1, save_top_k=-1)
    trainer = _trainer(max_epochs=3, enable_checkpointing=True, callbacks=[saver])
    trainer.fit(model, datamodule=_data(), ckpt_path=ckpt_path)
    return model


def _assert_same_state(actual: VAPL, expected: VAPL) -> None:
    for key, value in expected.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(actual.state_dict()[key], value, atol=1e-5, rtol=0), key
        else:
            assert torch.equal(actual.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("unit", "resume_epoch", "next_unit"),
    [
        ("epoch", 0, 1),  # epochs F F G G F G G: epoch 1 is the second of an F phase
        ("epoch", 2, 3),  # epoch 3 is the second of a G phase (its scores are recomputed)
        ("batch", 0, 3),  # 3 batches an epoch, cycles of 2 F + 2 G batches: batch 3 is G's 2nd
    ],
)
def test_a_run_resumed_mid_phase_ends_like_an_uninterrupted_one(
    tmp_path, unit, resume_epoch, next_unit
):
    uninterrupted = _fit_with_checkpoints(unit, tmp_path / "full")
    (checkpoint,) = (tmp_path / "full").glob(f"epoch={resume_epoch}-*.ckpt")
    state = torch.load(checkpoint, weights_only=False)
    if unit == "batch":
        assert state["vapl_cycle_position"] == next_unit
    assert phase_at(next_unit, 2, 2) == phase_at(next_unit - 1, 2, 2)  # mid-phase
    resumed = _fit_with_checkpoints(unit, tmp_path / "resumed", ckpt_path=str(checkpoint))
    assert resumed.cycle_position == uninterrupted.cycle_position
    _assert_same_state(resumed, uninterrupted)
    stored = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    assert _changed(stored, _snapshot(uninterrupted))  # the runs went on after the checkpoint


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


def test_epoch_g_phases_score_each_sample_once_and_keep_one_phase_in_the_cache():
    # F phases of 1 epoch, G phases of 2 epochs, 2 epochs of network updates: F G G F G G.
    seed_everything(0)
    model = _model(phase_unit="epoch", f_epochs=1, g_epochs=2)
    scored: list[tuple[int, int]] = []
    cache_sizes: list[int] = []
    original = model._target_scores

    def counting(batch, rows, targets, epoch):
        if model.phase == "G":
            scored.append((model.current_epoch, len(rows)))
        return original(batch, rows, targets, epoch)

    class CacheSize(Callback):
        def on_train_epoch_end(self, trainer, module) -> None:
            cache_sizes.append(len(module._score_cache))

    model._target_scores = counting
    _trainer(max_epochs=2, callbacks=[CacheSize()]).fit(model, datamodule=_data())
    per_epoch = {epoch: sum(n for e, n in scored if e == epoch) for epoch in range(6)}
    assert per_epoch == {0: 0, 1: 24, 2: 0, 3: 0, 4: 24, 5: 0}  # once per sample and G phase
    assert cache_sizes == [0, 24, 24, 0, 24, 24]  # one phase at a time, emptied by F steps


def _g_terms(model: VAPL, batch: dict) -> dict:
    model.eval()
    scores = model._target_scores(
        batch, torch.arange(len(batch["label"])), batch["label"], model._g_phase_slot()
    )
    return model.g_objective(batch, scores)


def test_g_follows_eq_11_unless_asked_for_the_activation_term():
    batch = _test_batch(n=6)
    torch.manual_seed(0)
    terms = _g_terms(_model(lambda_activ=1.0, lambda_agg=10.0), batch)
    torch.manual_seed(0)
    heavy = _g_terms(_model(lambda_activ=100.0, lambda_agg=10.0), batch)
    assert torch.allclose(terms["loss"], terms["pred"] + 10.0 * terms["agg"])
    assert torch.equal(terms["loss"], heavy["loss"])  # l2 plays no part in g's objective
    torch.manual_seed(0)
    model = _model(lambda_activ=2.0, g_activ_loss=True)
    ours = _g_terms(model, batch)
    attention = model.refined_prompts(batch, batch["label"], model._g_phase_slot())
    with torch.no_grad():
        activ = activation_distance(
            model.unprompted_model.features(batch["image"]),
            model.prompted_model.features(batch["image"] * attention[:, None]),
        )
    assert float(activ) > 0
    assert torch.allclose(ours["loss"], terms["loss"] + 2.0 * activ, rtol=1e-5)


def test_the_cross_entropy_and_l_activ_are_summed_over_the_batch_as_in_eq_6():
    batch = _test_batch(n=6)
    torch.manual_seed(0)
    summed = _g_terms(_model(), batch)
    torch.manual_seed(0)
    averaged = _g_terms(_model(loss_reduction="mean"), batch)
    assert torch.allclose(summed["pred"], 6 * averaged["pred"])
    a, b = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    assert float(activation_distance(a, b)) == 1 + 4 + 9
    assert float(activation_distance(a, b, reduction="mean")) == (1 + 4 + 9) / 2


def test_a_learned_g_without_a_g_phase_is_refused():
    with pytest.raises(ValueError, match="g_epochs=0 with use_weight_fn=true"):
        _model(phase_unit="epoch", g_epochs=0)
    with pytest.raises(ValueError, match="g_steps=0 with use_weight_fn=true"):
        _model(phase_unit="batch", g_steps=0)
    assert _model(g_steps=0, use_weight_fn=False).refiner.weight_fn is None  # VAPL-4 needs none
