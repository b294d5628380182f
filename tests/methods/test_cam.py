"""The CAM-guided LightningModules: their training signal, the explanation metrics every method
logs, and each config overlay end to end through the CLI."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from datamodules.synthetic import make_synthetic_split
from vapl.core.losses import coarse_annotation, gradia_loss, res_encoding
from vapl.core.metrics import explanation_scores
from vapl.core.saliency import feature_map_and_logits, grad_cam, normalize_cam
from vapl.methods import GRADIA, HAICS, RESG, RESL, Baseline
from vapl.training.cli import build_cli
from vapl.training.tiny import tiny_method, tiny_trainer

FAST = [
    "--trainer.fast_dev_run=true",
    "--model.init_args.backbone=tiny",
    "--data.init_args.image_size=32",
    "--data.init_args.batch_size=8",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
OVERLAYS = {"gradia": GRADIA, "haics": HAICS, "res_g": RESG, "res_l": RESL}


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def batch_of(dataset, rows: slice) -> dict:
    return {
        "image": dataset.images[rows],
        "prompt": dataset.prompts[rows],
        "has_prompt": dataset.has_prompt[rows],
        "label": dataset.labels[rows],
        "explanation": dataset.explanations[rows],
        "id": dataset.ids[rows],
    }


def test_training_cam_is_the_normalised_grad_cam_of_the_label():
    torch.manual_seed(0)
    model = GRADIA(num_classes=2, in_channels=1, backbone="tiny").eval()
    data = make_synthetic_split(6, image_size=32, seed=3)
    batch = batch_of(data, slice(0, 6))
    rows = torch.tensor([1, 3, 4])
    feature_map, logits = feature_map_and_logits(model.model, batch["image"])
    cam = model.training_cam(feature_map, logits, batch["label"], rows)
    expected, _ = grad_cam(model.model, batch["image"][rows], batch["label"][rows])
    torch.testing.assert_close(cam, normalize_cam(expected))
    # and the GRADIA term of the step is the loss of that CAM against the prompt
    factual, counterfactual = coarse_annotation(res_encoding(batch["prompt"][rows]), (8, 8))
    torch.testing.assert_close(
        model.attention_loss(cam, factual, counterfactual, None), gradia_loss(cam, factual)
    )


def test_bad_cam_arguments_are_refused():
    with pytest.raises(ValueError, match="cam_method"):
        GRADIA(backbone="tiny", in_channels=1, cam_method="scorecam")
    with pytest.raises(ValueError, match="last stage"):
        GRADIA(backbone="tiny", in_channels=1, cam_method="cam", cam_layer=4)
    with pytest.raises(ValueError, match="cam_normalization"):
        HAICS(backbone="tiny", in_channels=1, cam_normalization="sigmoid")
    assert RESL(backbone="tiny", in_channels=1).imputation.conv.stride == (4, 4)
    assert RESL(backbone="tiny", in_channels=1, imputation_stride=2).imputation.conv.stride == (
        2,
        2,
    )


def test_samples_without_prompt_get_no_attention_loss():
    torch.manual_seed(0)
    model = GRADIA(num_classes=2, in_channels=1, backbone="tiny")
    data = make_synthetic_split(4, image_size=32, seed=3, prompt_fraction=0.0)
    loss = model.training_step(batch_of(data, slice(0, 4)), 0)
    ce = torch.nn.functional.cross_entropy(model.model(data.images), data.labels)
    torch.testing.assert_close(loss, ce, rtol=1e-5, atol=1e-6)


def train_and_score(method: type, train, evaluation, steps: int, seed: int) -> tuple[float, float]:
    """IoU of the predicted class's Grad-CAM with the explanation, before and after training."""
    L.seed_everything(seed, verbose=False)
    model = tiny_method(method, lr=1e-3)

    def iou() -> float:
        model.eval()
        scores = explanation_scores(model.model, evaluation.images, evaluation.explanations)
        model.train()
        return scores["iou"].mean().item()

    before = iou()
    trainer = tiny_trainer(max_steps=steps, limit_val_batches=0)
    loader = DataLoader(
        train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    trainer.fit(model, loader)
    return before, iou()


def test_gradia_moves_the_cam_towards_the_explanation():
    """Same initialisation, same batches, 30 steps. The lesion is invisible (contrast 0), so the
    label is carried by the corner marker alone: cross-entropy pulls the Baseline's Grad-CAM out of
    the region of interest, while GRADIA's attention loss pulls it in. The prompts cover the whole
    region (GRADIA assumes complete annotations; see docs/method.md)."""
    data = {"image_size": 32, "lesion_radius": 10.0, "lesion_contrast": 0.0, "keep_fraction": 1.0}
    train = make_synthetic_split(128, seed=1, **data)
    evaluation = make_synthetic_split(64, seed=2, **data)
    base_before, base_after = train_and_score(Baseline, train, evaluation, steps=30, seed=0)
    gradia_before, gradia_after = train_and_score(GRADIA, train, evaluation, steps=30, seed=0)
    assert base_before == pytest.approx(gradia_before)  # the same starting point
    assert gradia_after - gradia_before > (base_after - base_before) + 0.1


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_fits_and_tests_on_the_demo(overlay, tmp_path):
    cli = build_cli(
        [
            "fit",
            "--config",
            "demo.yaml",
            "--config",
            f"methods/{overlay}.yaml",
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
        ]
    )
    assert type(cli.model) is OVERLAYS[overlay]
    logged = cli.trainer.logged_metrics
    assert torch.isfinite(logged["train/loss_attention"])
    assert logged["train/loss_attention"] > 0
    for key in ("val/unprompted/acc", "val/acc", "val/unprompted/iou", "val/unprompted/pointing"):
        assert key in logged, key
    results = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    for key in ("test/unprompted/acc", "test/unprompted/iou", "test/iou", "test/pointing"):
        assert key in results[0], key
    assert 0.0 <= results[0]["test/unprompted/iou"] <= 1.0


def test_plain_cam_trains(tmp_path):
    cli = build_cli(
        [
            "fit",
            "--config",
            "demo.yaml",
            "--config",
            "methods/res_g.yaml",
            "--model.init_args.cam_method=cam",
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
        ]
    )
    assert torch.isfinite(cli.trainer.logged_metrics["train/loss"])


@pytest.mark.parametrize("method", ["baseline", "vapl"])
def test_explanation_metrics_under_inference_mode(method, tmp_path):
    """``vapl test`` with Lightning's default inference_mode=True still scores Grad-CAMs; VAPL
    scores both heads."""
    args = ["test", "--config", "demo.yaml", f"--trainer.default_root_dir={tmp_path}", *FAST]
    if method == "baseline":
        args[3:3] = ["--config", "methods/baseline.yaml"]
    else:
        args += ["--model.init_args.n_masks=8", "--model.init_args.chunk_size=8"]
    cli = build_cli(args)
    assert cli.trainer.test_loop.inference_mode
    logged = cli.trainer.logged_metrics
    heads = ["unprompted"] if method == "baseline" else ["unprompted", "prompted"]
    for head in heads:
        for name in ("iou", "pointing"):
            assert 0.0 <= logged[f"test/{head}/{name}"] <= 1.0


def test_explanation_metrics_can_be_switched_off(tmp_path):
    cli = build_cli(
        [
            "test",
            "--config",
            "demo.yaml",
            "--config",
            "methods/gradia.yaml",
            "--model.init_args.explanation_metrics=false",
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
        ]
    )
    assert "test/unprompted/acc" in cli.trainer.logged_metrics
    assert not any("iou" in key for key in cli.trainer.logged_metrics)
