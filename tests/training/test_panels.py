"""Sample panels: Grad-CAM maps, the networks each method shows, the PNG fallback."""

from __future__ import annotations

import torch
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import CSVLogger

from vapl.core.backbones import build_backbone
from vapl.core.figures import (
    PanelRow,
    draw_panel,
    grad_cam_maps,
    panel_columns,
    panel_image,
    panel_networks,
    refined_tile,
    sample_tiles,
    tile_strip,
)
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


def test_a_sample_row_has_image_prompt_refined_prompt_and_one_cam_per_model_in_one_order():
    image = torch.zeros(1, 4, 4)
    prompt = torch.full((4, 4), -1.0)
    prompt[0, 0], prompt[3, 3] = 1.0, 0.0
    cams = {"b": torch.rand(4, 4), "unprompted": torch.rand(4, 4), "prompted": torch.rand(4, 4)}
    tiles = sample_tiles(image, prompt, torch.rand(4, 4), cams)
    assert [t for t, _ in tiles] == [
        "image",
        "prompt",
        "refined prompt",
        "Grad-CAM prompted",
        "Grad-CAM unprompted",
        "Grad-CAM b",
    ]
    overlay = tiles[1][1]
    assert overlay[0, 0, 0] > overlay[0, 0, 1]  # red
    assert overlay[3, 3, 0] > 0.4 and overlay[3, 3, 1] > 0.4 and overlay[3, 3, 2] == 0  # yellow
    strip = tile_strip(tiles)
    assert strip.shape == (96, 6 * 96 + 5 * 2, 3) and strip.dtype.name == "uint8"


def test_the_refined_prompt_is_drawn_in_neither_red_nor_yellow():
    colours = refined_tile(torch.linspace(0, 1, 101).view(1, -1))[0]  # [101, 3]
    red, green, blue = colours.T
    assert (blue >= red - 1e-6).all() and (blue >= green - 1e-6).all()  # white to blue
    assert blue[-1] > 2 * green[-1] > 4 * red[-1]  # 1 (kept) is clearly blue


def test_a_panel_has_one_column_order_a_legend_and_colour_bars():
    image, prompt = torch.zeros(1, 4, 4), torch.full((4, 4), -1.0)
    with_refined = PanelRow(image, prompt, torch.rand(4, 4), {"unprompted": torch.rand(4, 4)})
    without = PanelRow(image, prompt, None, {"prompted": torch.rand(4, 4)}, title="id | label 0")
    assert panel_columns([without, with_refined]) == [
        "image",
        "prompt",
        "refined prompt",
        "Grad-CAM prompted",
        "Grad-CAM unprompted",
    ]
    assert panel_columns([without]) == ["image", "prompt", "Grad-CAM prompted"]
    figure = draw_panel([without, with_refined], title="t")
    texts = {text.get_text() for ax in figure.axes for text in ax.texts + ax.get_children()
             if hasattr(text, "get_text")}  # fmt: skip
    legend_labels = {
        text.get_text() for ax in figure.axes if ax.get_legend() for text in ax.get_legend().texts
    }
    assert legend_labels == {"indispensable", "precluded", "undecided"}
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == panel_columns([without, with_refined])
    insets = [child for ax in figure.axes for child in ax.child_axes]  # the colour bars
    bars = [ax.get_xlabel() for ax in insets if ax.get_xlabel()]
    assert len(bars) == 2 and any("kept" in label for label in bars)  # refined prompt, Grad-CAM
    assert "none" in texts  # the first row has no refined prompt: its tile says so
    pixels = panel_image([with_refined])
    assert pixels.dtype.name == "uint8" and pixels.ndim == 3 and pixels.shape[2] == 3


def test_without_wandb_the_panels_are_written_as_png(
    tmp_path, tiny_trainer, tiny_data, tiny_method
):
    seed_everything(0)
    model = tiny_method(VAPL, n_masks=4, f_epochs=1, g_epochs=1)
    data = tiny_data(n_train=8, n_val=4, n_test=4, batch_size=4)
    trainer = tiny_trainer(
        max_epochs=1,  # one F epoch and one G epoch
        logger=CSVLogger(tmp_path),
        callbacks=[WandbDashboard(every_n_epochs=2, n_samples=2)],
    )
    trainer.fit(model, datamodule=data)
    panels = sorted(
        p.name for p in (tmp_path / "lightning_logs" / "version_0" / "panels").iterdir()
    )
    assert panels == ["epoch001.png"]
