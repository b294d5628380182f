"""LightningDataModules and file readers. Configs name them by short paths (``datamodules.X``)."""

from datamodules.base import PromptedDataModule, TensorSampleDataset
from datamodules.folder import FolderDataError, FolderDataModule
from datamodules.lidc import LIDCDataModule
from datamodules.pancreas import PancreasDataModule
from datamodules.synthetic import SyntheticDataModule
from datamodules.text_prompts import TextPromptDataModule

__all__ = [
    "FolderDataError",
    "FolderDataModule",
    "LIDCDataModule",
    "PancreasDataModule",
    "PromptedDataModule",
    "SyntheticDataModule",
    "TensorSampleDataset",
    "TextPromptDataModule",
]
