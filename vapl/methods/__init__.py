"""One LightningModule per method. Configs name them by these short paths (``vapl.methods.VAPL``)."""

from vapl.methods.base import Baseline, MethodModule
from vapl.methods.cam import GRADIA, HAICS, RESG, RESL, CAMGuided
from vapl.methods.crayon import CRAYON, CRAYONAttention, CRAYONPruning, YesNoGuided
from vapl.methods.learning_to_look import LearningToLook
from vapl.methods.vapl import VAPL

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
