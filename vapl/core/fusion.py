"""Batch norm folded into the convolution before it, for the scoring passes (plain torch).

Scoring runs the prompted model in eval mode, where a batch norm is an affine map per channel
with fixed statistics: ``bn(conv(x)) = conv'(x)`` with ``W' = W * s``, ``b' = (b - mean) * s +
beta`` and ``s = gamma / sqrt(var + eps)``. :class:`FoldedBatchNorm` keeps a copy of the network
with those pairs folded (batch norm replaced by the identity), sharing every other parameter with
the network, and recomputes the folded weights at every call: a network's weights and statistics
change without a trace that could be checked cheaply (the fused Adam step and batch norm's
running statistics do not bump ``Tensor._version``), and recomputing costs about 10 ms of CPU
for ResNet-18, a few passes' worth, so :class:`~vapl.core.refine.PromptRefiner` folds only when a
call scores at least ``FOLD_MIN_PAIRS`` masked images. ResNet-18's passes take about 8 % less
CPU time folded (docs/performance.md); the probabilities agree with the unfolded network to float
tolerance (about 1e-6).

Pairs are found by structure: a ``BatchNorm2d`` right after a ``Conv2d`` in an ``nn.Sequential``,
and ``bnK`` after ``convK`` in other modules (torchvision's ResNet blocks). The first call checks
the copy against the network on one input and falls back to the network if they disagree, so an
architecture where ``bnK`` does not directly follow ``convK`` is scored unfolded, never wrong.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator

import torch
from torch import nn

#: Fewer masked images than this in one call are scored unfolded (recomputing would cost more).
FOLD_MIN_PAIRS = 128
#: The largest disagreement of the folded copy's logits with the network's that is accepted, as a
#: fraction of the logits' largest magnitude (plus a floor for logits near zero).
CHECK_TOLERANCE = 1e-3


def _pairs(module: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """``(parent, conv name, batch-norm name)`` of every conv followed by a batch norm."""
    for parent in module.modules():
        children = list(parent.named_children())
        if isinstance(parent, nn.Sequential):
            for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
                if _foldable(conv, bn):
                    yield parent, conv_name, bn_name
            continue
        named = dict(children)
        for bn_name, bn in children:
            if bn_name.startswith("bn"):
                conv = named.get("conv" + bn_name[2:])
                if conv is not None and _foldable(conv, bn):
                    yield parent, "conv" + bn_name[2:], bn_name


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )


class FoldedBatchNorm:
    """``self(network)`` is ``network`` with its batch norms folded, for inference (see the module
    docstring); the network itself when it is in training mode or has nothing to fold."""

    def __init__(self) -> None:
        self._network: weakref.ref[nn.Module] | None = None
        self._copy: nn.Module | None = None
        self._folds: list[tuple[nn.Conv2d, nn.BatchNorm2d, nn.Conv2d]] = []
        self._device: torch.device | None = None
        self._checked = False

    def __getstate__(self) -> dict:
        return {}  # a cache: pickled (DDP spawn, checkpoints) empty, rebuilt on first use

    def __setstate__(self, state: dict) -> None:
        self.__init__()  # type: ignore[misc]

    def __deepcopy__(self, memo: dict) -> FoldedBatchNorm:
        return FoldedBatchNorm()

    def __call__(self, network: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
        """The folded copy of ``network`` (``example``: an input for the first call's check)."""
        if network.training:
            return network
        first = next(network.parameters(), None)
        device = None if first is None else first.device
        if self._network is None or self._network() is not network or device != self._device:
            self._build(network)
            self._device = device
        if self._copy is None:
            return network
        self._refresh()
        if not self._checked and example is not None:
            self._checked = True
            if not self._agrees(network, example):
                self._copy = None
                return network
        return self._copy

    def _build(self, network: nn.Module) -> None:
        self._network = weakref.ref(network)
        self._checked = False
        shared = {id(t): t for t in [*network.parameters(), *network.buffers()]}
        with torch.inference_mode(False):
            duplicate = copy.deepcopy(network, shared)  # new modules, the same tensors
            folds = []
            for parent, conv_name, bn_name in list(_pairs(duplicate)):
                conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
                folded = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    conv.dilation,
                    conv.groups,
                    bias=True,
                    padding_mode=conv.padding_mode,
                    device=conv.weight.device,
                    dtype=conv.weight.dtype,
                ).requires_grad_(False)
                setattr(parent, conv_name, folded)
                setattr(parent, bn_name, nn.Identity())
                folds.append((conv, bn, folded))
        self._folds = folds
        self._copy = duplicate.eval() if folds else None

    def _refresh(self) -> None:
        with torch.inference_mode(False), torch.no_grad():
            for conv, bn, folded in self._folds:
                scale = torch.rsqrt(bn.running_var + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight
                bias = -bn.running_mean if conv.bias is None else conv.bias - bn.running_mean
                bias = bias * scale
                if bn.bias is not None:
                    bias = bias + bn.bias
                folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                folded.bias.copy_(bias)

    def _agrees(self, network: nn.Module, example: torch.Tensor) -> bool:
        assert self._copy is not None
        with torch.inference_mode():
            expected = network(example)
            got = self._copy(example)
        if expected.shape != got.shape:
            return False
        scale = float(expected.abs().max()) + 1.0
        return float((expected - got).abs().max()) <= CHECK_TOLERANCE * scale
