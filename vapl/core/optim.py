"""Adam in the fastest implementation the parameters' device supports (plain torch).

``torch.optim.Adam`` defaults to a loop over the parameters on the CPU. The fused kernel (one
kernel for all parameters; CPU since torch 2.4, and CUDA, MPS, XPU) and the ``foreach`` one (a few
multi-tensor operations) give the same update to float tolerance: on the 22.4 M parameters of
VAPL's two ResNet-18s one CPU step took 87 ms fused, 349 ms foreach and 779 ms in the loop
(docs/performance.md, figure 11). :func:`adam` takes the fused kernel where it is supported and
falls back to ``foreach``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam(
    parameters: Iterable[torch.nn.Parameter] | Iterable[dict], lr: float, weight_decay: float = 0.0
) -> torch.optim.Adam:
    """``torch.optim.Adam(parameters, lr, weight_decay=...)``, fused where the parameters' device
    and dtype allow it, else ``foreach``."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, foreach=True)
