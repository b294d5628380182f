"""LightningDataModules and file readers. Configs name them by short paths (``datamodules.X``)."""

from datamodules.base import PromptedDataModule, TensorSampleDataset
from datamodules.folder import FolderDataError, FolderDataModule
from datamodules.gender import GenderDataModule
from datamodules.lidc import LIDCDataModule
from datamodules.mnist_variants import ColorMNISTDataModule, DecoyMNISTDataModule
from datamodules.pancreas import PancreasDataModule
from datamodules.scene import SceneDataModule
from datamodules.synthetic import SyntheticDataModule
from datamodules.text_prompts import TextPromptDataModule

__all__ = [
    "ColorMNISTDataModule",
    "DecoyMNISTDataModule",
    "FolderDataError",
    "FolderDataModule",
    "GenderDataModule",
    "LIDCDataModule",
    "PancreasDataModule",
    "PromptedDataModule",
    "SceneDataModule",
    "SyntheticDataModule",
    "TensorSampleDataset",
    "TextPromptDataModule",
]
