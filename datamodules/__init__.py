"""LightningDataModules and file readers. Configs name them by short paths (``datamodules.X``)."""

from datamodules.base import PromptedDataModule, TensorSampleDataset
from datamodules.gender import GenderDataModule
from datamodules.mnist_variants import ColorMNISTDataModule, DecoyMNISTDataModule
from datamodules.scene import SceneDataModule
from datamodules.synthetic import SyntheticDataModule

__all__ = [
    "ColorMNISTDataModule",
    "DecoyMNISTDataModule",
    "GenderDataModule",
    "PromptedDataModule",
    "SceneDataModule",
    "SyntheticDataModule",
    "TensorSampleDataset",
]
