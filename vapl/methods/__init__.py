"""One LightningModule per method. Configs name them by these short paths (``vapl.methods.VAPL``)."""

from vapl.methods.base import Baseline, MethodModule
from vapl.methods.vapl import VAPL

__all__ = ["Baseline", "MethodModule", "VAPL"]
