"""Sample panels: Grad-CAM maps, the networks each method shows, the PNG fallback."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger

from datamodules.synthetic import SyntheticDataModule
from vapl.core.backbones import build_backbone
from vapl.core.figures import grad_cam_maps, panel_networks, sample_tiles, tile_strip
from vapl.methods import VAPL, Baseline
from vapl.training.callbacks import WandbDashboard


def test_grad_cam_maps_are_image_sized_in_0_1_and_leave_the_model_mode_alone():
    model = build_backbone("tiny", num_classes=2, in_channels=1).train()
    with torch.inference_mode():  # as inside Lightning's validation loop
        images = torch.randn(3, 1, 16, 16)
        maps = grad_cam_maps(model, images)
    assert maps.shape == (3, 16, 16)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    assert model.training


def test_vapl_shows_both_networks_on_what_they_see_and_the_baseline_its_model():
    vapl = VAPL(num_classes=2, in_channels=1, backbone="tiny", n_masks=4)
    batch = {"image": torch.ones(2, 1, 8, 8), "has_prompt": torch.tensor([True, False])}
    refined = torch.full((2, 8, 8), 0.5)
    shown = panel_networks(vapl, batch, refined)
    assert shown["prompted"][0] is vapl.prompted_model
    assert torch.equal(shown["prompted"][1], torch.full((2, 1, 8, 8), 0.5))
    assert shown["unprompted"][0] is vapl.unprompted_model
    baseline = Baseline(num_classes=2, in_channels=1, backbone="tiny")
    assert list(panel_networks(baseline, batch, None)) == ["unprompted"]


def test_a_sample_row_has_image_prompt_refined_prompt_and_one_cam_per_model():
    image = torch.zeros(1, 4, 4)
    prompt = torch.full((4, 4), -1.0)
    prompt[0, 0], prompt[3, 3] = 1.0, 0.0
    tiles = sample_tiles(
        image, prompt, torch.rand(4, 4), {"a": torch.rand(4, 4), "b": torch.rand(4, 4)}
    )
    assert [t for t, _ in tiles] == [
        "image",
        "prompt",
        "refined prompt",
        "Grad-CAM a",
        "Grad-CAM b",
    ]
    overlay = tiles[1][1]
    assert overlay[0, 0, 0] > overlay[0, 0, 1]  # red
    assert overlay[3, 3, 0] > 0.4 and overlay[3, 3, 1] > 0.4 and overlay[3, 3, 2] == 0  # yellow
    strip = tile_strip(tiles)
    assert strip.shape == (96, 5 * 96 + 4 * 2, 3) and strip.dtype.name == "uint8"


def test_without_wandb_the_panels_are_written_as_png(tmp_path):
    seed_everything(0)
    model = VAPL(
        num_classes=2, in_channels=1, backbone="tiny", n_masks=4, chunk_size=16, f_epochs=1,
        g_epochs=1,
    )  # fmt: skip
    data = SyntheticDataModule(n_train=8, n_val=4, n_test=4, image_size=16, batch_size=4)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,  # one F epoch and one G epoch
        logger=CSVLogger(tmp_path),
        callbacks=[WandbDashboard(every_n_epochs=2, n_samples=2)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)
    panels = sorted(
        p.name for p in (tmp_path / "lightning_logs" / "version_0" / "panels").iterdir()
    )
    assert panels == ["epoch001.png"]
