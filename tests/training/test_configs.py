"""Every bundled config runs through the CLI: each data set config on its generated tree, and each
method overlay on the demo data, with ``fast_dev_run`` and the tiny CNN.

A config added to ``configs/`` without a generated tree here fails :func:`test_every_data_config_has_a_tree`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from datamodules.fixtures import write_lidc_tree, write_pancreas_tree
from datamodules.fixtures_natural import make_mnist_tree, make_res_tree
from datamodules.folder_example import write_example_folder
from vapl.apps.crayon_annotation import answer, export
from vapl.core.backbones import build_backbone
from vapl.training.cli import build_cli
from vapl.training.configs import bundled_config_dir, data_set_config_names
from vapl.vlm.maps import TINY_CLIP_NAME

BUNDLED = bundled_config_dir()
DATA_CONFIGS = data_set_config_names()
#: The GPU-sized data set configs: each runs here with the cpu.yaml overlay after it.
GPU_SIZED = ("folder.yaml", "gender.yaml", "scene.yaml")
METHOD_OVERLAYS = sorted(f"methods/{p.name}" for p in (BUNDLED / "methods").glob("*.yaml"))
FAST = [
    "--trainer.fast_dev_run=true",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.logger=false",
    "--model.init_args.backbone=tiny",
]
TINY_VLM = [
    f"--model.init_args.vlm_model={TINY_CLIP_NAME}",
    "--model.init_args.vlm_random_init=true",
]
DEMO_SIZE = [
    "--data.init_args.image_size=24",
    "--data.init_args.n_train=16",
    "--data.init_args.n_val=8",
    "--data.init_args.n_test=8",
    "--data.init_args.batch_size=8",
]


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def _demo(trees: Path) -> list[str]:
    return DEMO_SIZE


def _demo_text_prompts(trees: Path) -> list[str]:
    return [
        a.replace("--data.init_args", "--data.init_args.datamodule.init_args") for a in DEMO_SIZE
    ]


def _folder(trees: Path) -> list[str]:
    write_example_folder(trees / "folder", n=8, image_size=24)
    return [f"--data.init_args.root={trees / 'folder'}", "--data.init_args.image_size=24"]


def _medical(trees: Path, tree: Path) -> list[str]:
    return [
        f"--data.init_args.root={tree}",
        f"--data.init_args.cache_dir={trees / 'cache'}",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=8",
    ]


def _lidc(trees: Path) -> list[str]:
    return _medical(trees, write_lidc_tree(trees / "lidc", patients=6, size=48)[0])


def _pancreas(trees: Path) -> list[str]:
    return _medical(trees, write_pancreas_tree(trees / "pancreas", abnormal=4, normal=4, size=48))


def _res(name: str):
    def args(trees: Path) -> list[str]:
        tree = make_res_tree(trees / name, name, per_class=(3, 2, 2), image_size=24)
        return [
            f"--data.init_args.root={tree}",
            "--data.init_args.image_size=32",
            "--data.init_args.n_annotated_train=4",
            "--data.init_args.batch_size=4",
        ]

    return args


def _mnist(trees: Path) -> list[str]:
    tree = make_mnist_tree(trees / "mnist", n_train=60, n_test=20)
    return [f"--data.init_args.root={tree}", "--data.init_args.batch_size=8"]


#: Each data set config -> the overrides that point it at a small generated tree.
TREES = {
    "color_mnist.yaml": _mnist,
    "decoy_mnist.yaml": _mnist,
    "demo.yaml": _demo,
    "demo_text_prompts.yaml": _demo_text_prompts,
    "folder.yaml": _folder,
    "gender.yaml": _res("gender"),
    "lidc.yaml": _lidc,
    "pancreas.yaml": _pancreas,
    "scene.yaml": _res("scene"),
}


def test_every_data_config_has_a_tree():
    assert sorted(TREES) == DATA_CONFIGS
    assert "cpu.yaml" in {p.name for p in BUNDLED.glob("*.yaml")}  # an overlay, not a data set


@pytest.mark.parametrize("config", DATA_CONFIGS)
def test_each_data_config_fits_on_its_generated_tree(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = TREES[config](tmp_path / "trees")
    overlay = ["--config", "cpu.yaml"] if config in GPU_SIZED else []
    cli = build_cli(
        ["fit", "--config", config, *overlay, *FAST, "--model.init_args.n_masks=4", *args]
    )
    assert cli.trainer.state.finished
    model, data = cli.model, cli.datamodule
    assert model.hparams.num_classes == data.num_classes
    assert model.hparams.in_channels == data.in_channels
    metrics = cli.trainer.callback_metrics
    assert {"val/prompted/acc", "val/unprompted/acc"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"])


@pytest.fixture(scope="module")
def crayon_answers(tmp_path_factory) -> list[str]:
    """The two stages before a CRAYON fine-tune, on the demo data: export, oracle answers."""
    folder = tmp_path_factory.mktemp("crayon")
    original = folder / "original.pt"
    torch.save(build_backbone("tiny", num_classes=2, in_channels=1).state_dict(), original)
    cli_args = ["--config", "demo.yaml", "--model.init_args.backbone=tiny", *DEMO_SIZE]
    export(str(original), folder / "export", cli_args, top_k=3, pictures=False)
    answers = answer(folder / "export", use_oracle=True, threshold=0.1)
    return [
        f"--model.init_args.answers={answers}",
        f"--model.init_args.init_checkpoint={original}",
    ]


@pytest.mark.parametrize("overlay", METHOD_OVERLAYS)
def test_each_method_overlay_fits_on_the_demo_data(overlay, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    extra: list[str] = []
    if "crayon" in overlay:
        extra = request.getfixturevalue("crayon_answers")
    if "learning_to_look" in overlay:
        extra = [*TINY_VLM, f"--model.init_args.map_cache_dir={tmp_path / 'maps'}"]
    args = ["fit", "--config", "demo.yaml", "--config", overlay, *FAST, *DEMO_SIZE, *extra]
    cli = build_cli(args)
    assert cli.trainer.state.finished
    metrics = cli.trainer.callback_metrics
    assert "val/unprompted/acc" in metrics  # the key that compares every method
    assert torch.isfinite(metrics["train/loss"])
