"""The three CRAYON stages on every dataset config that has a generator (LIDC, Pancreas, folder),
starting from a given classifier state dict instead of a Baseline checkpoint."""

from __future__ import annotations

import pytest
import torch

from datamodules.fixtures import write_lidc_tree, write_pancreas_tree
from datamodules.folder_example import write_example_folder
from vapl.command import main
from vapl.core.backbones import build_backbone
from vapl.core.yesno import read_answers
from vapl.training.cli import build_cli

QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
]


pytestmark = pytest.mark.usefixtures("quiet_lightning")


def _dataset_args(name: str, tmp_path) -> tuple[str, list[str]]:
    if name == "lidc":
        root, _ = write_lidc_tree(tmp_path / "lidc", patients=6, size=64)
        extra = [f"--data.init_args.root={root}", f"--data.init_args.cache_dir={tmp_path / 'c'}"]
    elif name == "pancreas":
        root = write_pancreas_tree(tmp_path / "pancreas", abnormal=4, normal=4, size=48)
        extra = [f"--data.init_args.root={root}", f"--data.init_args.cache_dir={tmp_path / 'c'}"]
    else:
        write_example_folder(tmp_path / "folder", n=8, image_size=24)
        extra = [f"--data.init_args.root={tmp_path / 'folder'}", "--data.init_args.num_workers=0"]
    size = 24 if name == "folder" else 32
    return f"{name}.yaml", [*extra, f"--data.init_args.image_size={size}", *QUIET]


@pytest.mark.parametrize("name", ["lidc", "pancreas", "folder"])
def test_three_stages_on_a_generated_dataset(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, data = _dataset_args(name, tmp_path)
    probe = build_cli(["--config", config, "--model.init_args.backbone=tiny", *data], run=False)
    classifier = build_backbone(
        "tiny",
        num_classes=probe.model.hparams.num_classes,
        in_channels=probe.model.hparams.in_channels,
    )
    torch.save(classifier.state_dict(), tmp_path / "original.pt")

    export_dir = tmp_path / "crayon"
    main(["crayon", "export", "--checkpoint", str(tmp_path / "original.pt"), "--out",
          str(export_dir), "--top-k", "3", "--config", config, "--model.init_args.backbone=tiny",
          *data])  # fmt: skip
    main(["crayon", "answer", "--export", str(export_dir), "--oracle", "--threshold", "0.1"])
    answers = read_answers(export_dir / "answers.csv")
    assert len(answers.neurons) == 64 and answers.images

    cli = build_cli(
        [
            "fit",
            "--config",
            config,
            "--config",
            "methods/crayon.yaml",
            "--model.init_args.backbone=tiny",
            f"--model.init_args.answers={export_dir / 'answers.csv'}",
            f"--model.init_args.init_checkpoint={tmp_path / 'original.pt'}",
            "--trainer.fast_dev_run=true",
            *data,
        ]
    )
    assert cli.trainer.state.finished
    assert torch.equal(cli.model.neuron_mask.mask, answers.neuron_mask(64))
