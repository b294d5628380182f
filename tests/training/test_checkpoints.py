"""The checkpoint policy (best validation epoch + ``last.ckpt``), model selection in
``vapl fit-test``, resuming in the same run folder, and no empty run folders after a failure."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from interrupting import InterruptAt
from lightning.pytorch import Trainer, seed_everything

from datamodules.base import EpochSeededSampler, ResumableLoader
from datamodules.folder_csv import FolderDataError
from datamodules.folder_example import write_example_folder
from datamodules.synthetic import SyntheticDataModule
from vapl.methods import VAPL, Baseline
from vapl.training.checkpoints import RunCheckpoint
from vapl.training.cli import build_cli
from vapl.training.fit_then_test import TESTED_CHECKPOINT, fit_then_test

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TINY = [
    "--config",
    "demo.yaml",
    "--data.init_args.n_train=24",
    "--data.init_args.n_val=8",
    "--data.init_args.n_test=8",
    "--data.init_args.image_size=16",
    "--data.init_args.batch_size=8",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
]
VAPL_TINY = [*TINY, "--model.init_args.n_masks=4", "--model.init_args.f_steps=2"]


class ScriptedBaseline(Baseline):
    """A Baseline whose validation accuracy follows ``SCRIPT`` (epoch 1 is the best) and that
    logs, when tested, how many epochs its weights were trained for."""

    SCRIPT = (0.5, 0.9, 0.7)

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.register_buffer("epochs_trained", torch.zeros((), dtype=torch.long))

    def _log_epoch_metrics(self, stage: str) -> None:
        if stage != "val":
            super()._log_epoch_metrics(stage)
            return
        self.metrics["val_unprompted"].reset()
        self.log("val/acc", self.SCRIPT[min(self.current_epoch, len(self.SCRIPT) - 1)])

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.epochs_trained += 1

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self.log("test/epochs_trained", self.epochs_trained.float())


def test_fit_test_tests_the_best_validation_epoch_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(HERE))  # the model's class path, for the CLI
    results = fit_then_test(
        [*TINY, "--model=test_checkpoints.ScriptedBaseline", "--trainer.max_epochs=3"]
    )
    # epoch 1 (validation accuracy 0.9) is tested, not the last one (epoch 2)
    assert results["test/epochs_trained"] == 2
    (record,) = tmp_path.rglob(TESTED_CHECKPOINT)
    tested = json.loads(record.read_text())
    assert tested["checkpoint"] == "best" and tested["epoch"] == 1
    assert tested["monitor"] == "val/acc" and tested["score"] == pytest.approx(0.9)


def _count_writes(monkeypatch) -> list[str]:
    written: list[str] = []
    original = Trainer.save_checkpoint

    def counted(self, filepath, *args, **kwargs):  # type: ignore[no-untyped-def]
        written.append(Path(filepath).name)
        return original(self, filepath, *args, **kwargs)

    monkeypatch.setattr(Trainer, "save_checkpoint", counted)
    return written


def test_an_epoch_writes_one_checkpoint_and_the_best_is_a_link_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(HERE))
    written = _count_writes(monkeypatch)
    cli = build_cli(
        ["fit", *TINY, "--model=test_checkpoints.ScriptedBaseline", "--trainer.max_epochs=3"]
    )
    assert written == ["last.ckpt.partial"] * 3  # one full write an epoch, nothing at the end
    folder = Path(cli.trainer.checkpoint_callback.dirpath)
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=1.ckpt", "last.ckpt"]
    best = torch.load(folder / "best-epoch=1.ckpt", weights_only=False)
    last = torch.load(folder / "last.ckpt", weights_only=False)
    assert (best["epoch"], last["epoch"]) == (1, 2)
    assert int(best["state_dict"]["epochs_trained"]) == 2
    assert int(last["state_dict"]["epochs_trained"]) == 3
    if hasattr(os, "link"):
        assert (folder / "best-epoch=1.ckpt").stat().st_nlink == 1  # last.ckpt was replaced


def test_the_selection_metric_is_the_methods_unless_configured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", "demo.yaml", "--trainer.max_epochs=1"], run=False)
    callback = cli.trainer.checkpoint_callback
    assert isinstance(callback, RunCheckpoint)
    callback.setup(cli.trainer, cli.model, "fit")
    assert (callback.monitor, callback.mode) == (VAPL.selection_metric, "max")
    assert VAPL.selection_metric == "val/prompted/acc" and Baseline.selection_metric == "val/acc"
    own = build_cli(
        ["--config", "demo.yaml", "--checkpoint.monitor=val/unprompted/loss"], run=False
    )
    own.trainer.checkpoint_callback.setup(own.trainer, own.model, "fit")
    assert (own.trainer.checkpoint_callback.monitor, own.trainer.checkpoint_callback.mode) == (
        "val/unprompted/loss",
        "min",
    )
    off = build_cli(["--config", "demo.yaml", "--trainer.enable_checkpointing=false"], run=False)
    assert off.trainer.checkpoint_callback is None


# ----- interrupting and resuming ---------------------------------------------------------------
def _data() -> SyntheticDataModule:
    return SyntheticDataModule(n_train=40, n_val=8, n_test=8, image_size=16, batch_size=8)


def _fit(folder: Path, max_epochs: int, callbacks=(), ckpt_path=None) -> VAPL:  # type: ignore[no-untyped-def]
    seed_everything(0)
    model = VAPL(
        in_channels=1, backbone="tiny", n_masks=4, phase_unit="batch", f_steps=3, g_steps=2, lr=1e-3
    )
    trainer = Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        default_root_dir=folder,
        callbacks=[RunCheckpoint(dirpath=str(folder / "checkpoints")), *callbacks],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=_data(), ckpt_path=ckpt_path)
    return model


def test_ctrl_c_mid_epoch_saves_last_and_the_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    uninterrupted = _fit(tmp_path / "full", max_epochs=3)
    with pytest.raises(SystemExit):  # Lightning ends the process after a KeyboardInterrupt
        _fit(tmp_path / "cut", max_epochs=3, callbacks=[InterruptAt(epoch=1, batch=2)])
    last = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)
    progress = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert (last["epoch"], progress["completed"]) == (1, 2)  # the middle of epoch 1
    resumed = _fit(
        tmp_path / "cut", max_epochs=3, ckpt_path=str(tmp_path / "cut/checkpoints/last.ckpt")
    )
    # 3 epochs of F batches (15) in phases of 3, each followed by 2 G batches: 5 epochs, 25 batches
    assert resumed.cycle_position == uninterrupted.cycle_position == 25
    expected, actual = uninterrupted.state_dict(), resumed.state_dict()
    for key, value in expected.items():
        assert torch.allclose(actual[key].float(), value.float(), atol=1e-5, rtol=0), key


def test_the_training_loader_resumes_after_the_batches_it_had_served():
    sampler = EpochSeededSampler(20, seed=3)
    loader = ResumableLoader(range(20), batch_size=4, sampler=sampler, position=lambda: 2)
    sampler.set_epoch(5)
    order = list(sampler)
    state = loader.state_dict()
    assert state == {"epoch": 5, "batches": 2}
    fresh = ResumableLoader(range(20), batch_size=4, sampler=EpochSeededSampler(20, seed=3))
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(5)
    assert [int(i) for batch in fresh for i in batch] == order[8:]  # the rest of epoch 5
    fresh.sampler.set_epoch(6)
    assert len([int(i) for batch in fresh for i in batch]) == 20  # the next epoch is whole


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        "OMP_NUM_THREADS": "1",
    }


def _vapl(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vapl.command", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )


def test_the_vapl_command_interrupted_by_ctrl_c_resumes_in_the_same_run_folder(
    tmp_path, monkeypatch
):
    common = ["fit", *VAPL_TINY, "--trainer.max_epochs=3"]
    cut = _vapl([*common, "--trainer.callbacks+=interrupting.InterruptAt"], tmp_path)  # epoch 1
    assert cut.returncode != 0
    output = cut.stdout + cut.stderr
    assert "Traceback" not in output
    assert "last.ckpt" in output and "--ckpt_path last" in output
    resumed = _vapl([*common, "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dirpath has changed" not in resumed.stdout + resumed.stderr
    (runs,) = {p.parent for p in (tmp_path / "runs").rglob("version_*")}
    assert sorted(p.name for p in runs.iterdir()) == ["version_0"]  # no new version folder
    (tmp_path / "once").mkdir()
    monkeypatch.chdir(tmp_path / "once")  # the same run without an interruption, in-process
    build_cli(common)
    reference = next((tmp_path / "once" / "runs").rglob("version_0"))
    rows, expected = _rows(runs / "version_0"), _rows(reference)
    assert [(r["epoch"], r["step"]) for r in rows] == [(r["epoch"], r["step"]) for r in expected]
    for got, want in zip(rows, expected):
        for key, value in want.items():
            if key.startswith("val/") and value:
                assert float(got[key]) == pytest.approx(float(value), abs=1e-5), key


def test_a_run_that_fails_on_bad_data_leaves_no_run_folder(tmp_path):
    root = tmp_path / "data"
    write_example_folder(root, n=4, image_size=16)
    (root / "images" / "train-00000.png").write_text("not an image")
    args = [
        "fit",
        "--config",
        "folder.yaml",
        f"--data.init_args.root={root}",
        "--data.init_args.image_size=16",
        "--data.init_args.num_workers=0",
        "--model.init_args.backbone=tiny",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]
    with pytest.raises(FolderDataError, match="train-00000.png"):
        build_cli(args)
    assert (tmp_path / "runs").is_dir() and not list((tmp_path / "runs").rglob("version_*"))
    result = _vapl(args, tmp_path)
    assert result.returncode != 0 and "train-00000.png" in result.stderr
    assert not list((tmp_path / "runs").rglob("version_*"))
