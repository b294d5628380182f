"""COCO Gender (men and women images from MS COCO) in the RES release layout.

Class 0 is ``men``, class 1 ``women`` (the alphabetical order torchvision's ImageFolder gives the
RES code). The Gender test split names its folders ``men_test`` and ``women_test``; both spellings
are read. See :mod:`datamodules.res_data` for the layout and docs/data.md for how to get the data.
"""

from __future__ import annotations

from datamodules.res_data import ResDataModule


class GenderDataModule(ResDataModule):
    """Gender classification with human attention labels (RES, KDD 2022). Three channels."""

    class_names = ("men", "women")
