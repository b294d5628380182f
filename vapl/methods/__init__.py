"""One LightningModule per method. Configs name them by these short paths (``vapl.methods.VAPL``)."""

from vapl.methods.base import Baseline, MethodModule
from vapl.methods.cam import GRADIA, HAICS, RESG, RESL, CAMGuided
from vapl.methods.vapl import VAPL
from vapl.methods.vlm import LearningToLook
from vapl.methods.yesno import CRAYON, CRAYONAttention, CRAYONPruning, YesNoGuided

__all__ = [
    "CRAYON",
    "Baseline",
    "CAMGuided",
    "CRAYONAttention",
    "CRAYONPruning",
    "GRADIA",
    "HAICS",
    "LearningToLook",
    "MethodModule",
    "RESG",
    "RESL",
    "VAPL",
    "YesNoGuided",
]
