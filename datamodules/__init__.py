"""LightningDataModules and file readers. Configs name them by short paths (``datamodules.X``)."""

from datamodules.base import PromptedDataModule, TensorSampleDataset
from datamodules.lidc import LIDCDataModule
from datamodules.pancreas import PancreasDataModule
from datamodules.synthetic import SyntheticDataModule

__all__ = [
    "LIDCDataModule",
    "PancreasDataModule",
    "PromptedDataModule",
    "SyntheticDataModule",
    "TensorSampleDataset",
]
