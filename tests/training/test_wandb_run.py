"""An offline W&B run end to end: run folder, config, summary, test table and image panel."""

from __future__ import annotations

import json
import os

import pytest
import torch

from vapl.training.callbacks import WandbDashboard
from vapl.training.fit_then_test import fit_then_test
from vapl.training.wandb_records import find_wandb_runs, read_wandb_run

TINY = [
    "--data.init_args.n_train=16",
    "--data.init_args.n_val=8",
    "--data.init_args.n_test=8",
    "--data.init_args.image_size=16",
    "--data.init_args.batch_size=8",
    "--model.init_args.n_masks=8",
    "--model.init_args.f_epochs=1",
    "--model.init_args.g_epochs=1",
    "--trainer.max_epochs=1",  # one F epoch, then one G epoch: the trainer runs 2
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """No W&B mode set, no API key, every W&B folder in tmp_path: vapl must choose offline."""
    monkeypatch.chdir(tmp_path)
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    empty_netrc = tmp_path / "netrc"
    empty_netrc.write_text("")
    monkeypatch.setenv("NETRC", str(empty_netrc))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    return tmp_path


def test_an_offline_run_writes_config_summary_table_and_panel(offline_wandb):
    results = fit_then_test(["--config", "demo.yaml", "--config", "logger/wandb.yaml", *TINY])
    assert "WANDB_MODE" not in os.environ  # the mode was given to this run only
    (folder,) = find_wandb_runs(offline_wandb / "runs")
    assert folder.name.startswith("offline-run-")
    run = read_wandb_run(folder)
    assert run.finished
    assert (run.name, run.group) == ("VAPL_demo_seed0", "demo")
    assert "VAPL" in run.tags
    # the full resolved config, and the identity used to group runs
    config = run.config["config"]
    assert config["model"]["class_path"] == "vapl.methods.VAPL"
    assert config["model"]["init_args"]["n_masks"] == 8
    assert config["data"]["init_args"]["image_size"] == 16
    assert run.config["vapl"] == {
        "method": "VAPL",
        "dataset": "demo",
        "seed": 0,
        "name": "VAPL_demo_seed0",
    }
    # summary: the shared metric keys, the best validation scores, the test metrics
    summary = run.scalars()
    for head in ("prompted", "unprompted"):
        for metric in ("acc", "precision", "recall", "f1"):
            assert summary[f"test/{head}/{metric}"] == pytest.approx(
                results[f"test/{head}/{metric}"]
            )
            assert 0.0 <= summary[f"best/val/{head}/{metric}"] <= 1.0
            assert summary[f"best/val/{head}/{metric}"] >= summary[f"val/{head}/{metric}"]
    # the test table: one row per head
    (table,) = folder.glob("files/media/table/test/table_*.table.json")
    rows = json.loads(table.read_text())
    assert rows["columns"] == ["method", "dataset", "head", "acc", "precision", "recall", "f1"]
    assert [r[:3] for r in rows["data"]] == [
        ["VAPL", "demo", "prompted"],
        ["VAPL", "demo", "unprompted"],
    ]
    assert rows["data"][0][3] == pytest.approx(results["test/prompted/acc"])
    # the image panel: 4 fixed validation samples after epoch 2 (every 2 epochs)
    panel = run.summary["val/samples"]
    assert panel["count"] == 4 and len(panel["captions"]) == 4
    assert panel["captions"][0].startswith("val-00000 | label ")
    strips = sorted(folder.glob("files/media/images/val/samples_*.png"))
    assert len(strips) == 4
    from PIL import Image

    width, height = Image.open(strips[0]).size
    # one panel figure per sample (vapl.core.figures): a row of 5 titled columns (image, prompt,
    # refined prompt, Grad-CAM prompted and unprompted) over a key row
    assert width > 3 * height > 300
    # the CSV log of the same run is there too
    assert list((offline_wandb / "runs" / "demo" / "VAPL_demo_seed0").rglob("metrics.csv"))


def test_best_scores_take_the_maximum_and_for_losses_the_minimum():
    class FakeTrainer:
        sanity_checking = False
        is_global_zero = False  # no logger work, only the bookkeeping
        current_epoch = 0
        callback_metrics: dict = {}

    dashboard = WandbDashboard()
    trainer = FakeTrainer()
    for acc, loss in ((0.6, 0.9), (0.8, 0.7), (0.7, 0.8)):
        trainer.callback_metrics = {
            "val/prompted/acc": torch.tensor(acc),
            "val/prompted/loss": torch.tensor(loss),
            "train/prompted/acc": torch.tensor(1.0),
        }
        dashboard.on_validation_end(trainer, None)
    assert dashboard.best == pytest.approx({"val/prompted/acc": 0.8, "val/prompted/loss": 0.7})
    restored = WandbDashboard()
    restored.load_state_dict(dashboard.state_dict())
    assert restored.best == dashboard.best
