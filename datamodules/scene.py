"""Places Scene (nature and urban scenes from Places365) in the RES release layout.

Class 0 is ``nature``, class 1 ``urban`` (the alphabetical order the RES code gets from
torchvision's ImageFolder). See :mod:`datamodules.res_data` for the layout and docs/data.md for
how to get the data.
"""

from __future__ import annotations

from datamodules.res_data import ResDataModule


class SceneDataModule(ResDataModule):
    """Scene recognition with human attention labels (RES, KDD 2022). Three channels."""

    class_names = ("nature", "urban")
