"""Progress as plain lines when the output is not a terminal."""

from __future__ import annotations

import io

from jsonargparse import Namespace
from lightning.pytorch import Trainer, seed_everything

from datamodules.synthetic import SyntheticDataModule
from vapl.core.progress import LineProgress, progress
from vapl.methods import Baseline
from vapl.training.cli import add_plain_progress_bar
from vapl.training.progress import PlainProgressBar, wants_plain_progress


def test_training_progress_is_one_line_per_epoch_and_evaluation(tmp_path):
    seed_everything(0)
    stream = io.StringIO()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[PlainProgressBar(interval=0, stream=stream)],
        default_root_dir=tmp_path,
    )
    model = Baseline(num_classes=2, in_channels=1, backbone="tiny")
    data = SyntheticDataModule(n_train=16, n_val=8, n_test=8, image_size=16, batch_size=8)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2", "test"]
    assert lines[0].startswith("epoch 1/2: 2 batches in ") and "val/unprompted/acc " in lines[0]
    assert lines[2].startswith("test: 1 batches in ")


def test_the_cli_adds_plain_progress_unless_bars_are_off_or_one_is_configured():
    config = Namespace(trainer=Namespace(enable_progress_bar=None, callbacks=None))
    assert add_plain_progress_bar(config)
    assert config.trainer.callbacks[0].class_path == "vapl.training.progress.PlainProgressBar"
    assert not add_plain_progress_bar(config)  # one is configured now
    off = Namespace(trainer=Namespace(enable_progress_bar=False, callbacks=None))
    assert not add_plain_progress_bar(off)
    assert wants_plain_progress(io.StringIO())  # a file or pipe is not a terminal


def test_loops_write_whole_lines_to_a_file():
    stream = io.StringIO()
    bar = progress(range(3), desc="reading", file=stream, mininterval=0)
    assert isinstance(bar, LineProgress)
    assert list(bar) == [0, 1, 2]
    text = stream.getvalue()
    assert "\r" not in text and text.splitlines()[-1].startswith("reading: 100%")
