"""Does a bundled data set's prompt give its label away? Measured on its generated tree.

    python -m datamodules.prompt_leak                       # every data set below
    python -m datamodules.prompt_leak lidc pancreas-tumour  # some of them

Each data set is generated (the fixtures of ``datamodules.fixtures``, ``fixtures_natural``,
``folder_example``, the demo's generator) into a temporary folder and read by its datamodule with
the bundled config's prompt settings; a logistic regression on the shape of the prompts alone
(:func:`vapl.core.leakage.leak_score`) is fitted on the training split and scored on the test
split. Prompted samples only. ``pancreas-tumour`` is the Pancreas reading that leaks
(``prompt_source: tumour``); ``decoy-mnist`` and ``color-mnist`` prompt the digit's strokes, whose
shape is the class by nature. See docs/data.md ("Do prompts leak the label?").
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from datamodules.base import PromptedDataModule
from vapl.core.leakage import LeakScore, leak_score


def _lidc(folder: Path) -> PromptedDataModule:
    from datamodules.fixtures import write_lidc_tree
    from datamodules.lidc import LIDCDataModule

    root, _ = write_lidc_tree(folder, patients=10, size=48, slices=16)
    return LIDCDataModule(
        root=str(root), cache_dir=str(folder / "cache"), image_size=32, n_train=30, n_val=4,
        n_test=None, keep_fraction=0.5,
    )  # fmt: skip


def _pancreas(folder: Path, source: str = "pancreas") -> PromptedDataModule:
    from datamodules.fixtures import write_pancreas_tree
    from datamodules.pancreas import PancreasDataModule

    root = write_pancreas_tree(folder, abnormal=12, normal=12, size=48, slices=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the tumour source's own warning
        return PancreasDataModule(
            root=str(root), cache_dir=str(folder / "cache"), image_size=32, n_train=30, n_val=4,
            n_test=None, keep_fraction=0.5, prompt_source=source,
        )  # fmt: skip


def _res(dataset: str) -> Callable[[Path], PromptedDataModule]:
    def build(folder: Path) -> PromptedDataModule:
        from datamodules.fixtures_natural import make_res_tree
        from datamodules.gender import GenderDataModule
        from datamodules.scene import SceneDataModule

        root = make_res_tree(
            folder / dataset, dataset, per_class=(50, 1, 50), annotated_fraction=1.0, image_size=24
        )
        module = GenderDataModule if dataset == "gender" else SceneDataModule
        return module(
            root=str(root), image_size=24, n_annotated_train=100, n_unprompted_train=0,
            augment=False,
        )  # fmt: skip

    return build


def _folder(folder: Path) -> PromptedDataModule:
    from datamodules.folder import FolderDataModule
    from datamodules.folder_example import write_example_folder

    write_example_folder(folder, n=90, image_size=24)
    return FolderDataModule(root=str(folder), image_size=24, channels=1)


def _demo(folder: Path) -> PromptedDataModule:
    from datamodules.synthetic import SyntheticDataModule

    return SyntheticDataModule(n_train=256, n_val=16, n_test=256, image_size=48)


def _mnist(kind: str) -> Callable[[Path], PromptedDataModule]:
    def build(folder: Path) -> PromptedDataModule:
        from datamodules.fixtures_natural import make_mnist_tree
        from datamodules.mnist_variants import ColorMNISTDataModule, DecoyMNISTDataModule

        root = make_mnist_tree(folder / "mnist", n_train=1000, n_test=500)
        if kind == "decoy":
            return DecoyMNISTDataModule(root=str(root), keep_fraction=0.5, n_val=100)
        return ColorMNISTDataModule(
            root=str(root), keep_fraction=0.5, precluded_region="background", n_val=100
        )

    return build


#: Data sets whose prompts come from annotated regions: a test checks these do not leak.
REGION_PROMPTS: dict[str, Callable[[Path], PromptedDataModule]] = {
    "lidc": _lidc,
    "pancreas": _pancreas,
    "gender": _res("gender"),
    "scene": _res("scene"),
    "folder": _folder,
    "demo": _demo,
}
#: Prompts that carry the class by construction: measured and reported (docs/data.md).
REPORTED: dict[str, Callable[[Path], PromptedDataModule]] = {
    "pancreas-tumour": lambda folder: _pancreas(folder, "tumour"),
    "decoy-mnist": _mnist("decoy"),
    "color-mnist": _mnist("color"),
}
DATASETS = {**REGION_PROMPTS, **REPORTED}


def split_prompts(module: PromptedDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts [n, H, W] and labels [n] of a split's prompted samples (no augmentation)."""
    dataset = module.datasets[split]
    if hasattr(dataset, "transform"):
        dataset.transform = None
    prompts, labels = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        if bool(sample["has_prompt"]):
            prompts.append(sample["prompt"])
            labels.append(int(sample["label"]))
    return torch.stack(prompts), torch.tensor(labels)


def measure(name: str, folder: str | Path | None = None) -> LeakScore:
    """Generate data set ``name`` (in ``folder``, else a temporary one) and score its prompts."""
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return measure(name, tmp)
    module = DATASETS[name](Path(folder))
    module.prepare_data()
    module.setup("fit")
    train = split_prompts(module, "train")
    test = split_prompts(module, "test")
    return leak_score(*train, *test, num_classes=module.num_classes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[*DATASETS, []], help="data sets (all)")
    names = parser.parse_args(argv).names or list(DATASETS)
    torch.manual_seed(0)
    for name in names:
        print(f"{name:<16} {measure(name)}", flush=True)


if __name__ == "__main__":
    main()
