"""vapl: visual attention-prompted prediction and learning on PyTorch Lightning."""

__version__ = "0.1.0"
