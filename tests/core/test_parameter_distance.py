"""Eq. 6's L_Param: value by hand, gradients against the layer-by-layer autograd sum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vapl.core.backbones import build_backbone
from vapl.core.losses import parameter_distance


def _pair() -> tuple[nn.Module, nn.Module]:
    a = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=True))
    b = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=True))
    with torch.no_grad():
        a[0].weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        b[0].weight.copy_(torch.tensor([0.0, 4.0]).view(2, 1, 1, 1))
        a[2].weight.copy_(torch.tensor([3.0, 0.0]).view(1, 2, 1, 1))
        b[2].weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))
    return a, b


def test_the_value_is_the_sum_of_squared_differences_of_conv_weights_only():
    a, b = _pair()
    # (1-0)^2 + (2-4)^2 + (3-1)^2 + (0-1)^2 = 1 + 4 + 4 + 1; biases are not compared
    assert float(parameter_distance(a, b)) == pytest.approx(10.0)


def test_gradients_are_those_of_the_layer_by_layer_sum():
    torch.manual_seed(0)
    a = build_backbone("tiny", num_classes=2, in_channels=1)
    b = build_backbone("tiny", num_classes=2, in_channels=1)
    convs = [
        (m_a.weight, m_b.weight)
        for m_a, m_b in zip(a.modules(), b.modules())
        if isinstance(m_a, nn.Conv2d)
    ]
    (3.0 * parameter_distance(a, b)).backward()
    fast = [(w_a.grad.clone(), w_b.grad.clone()) for w_a, w_b in convs]
    for w_a, w_b in convs:
        w_a.grad = w_b.grad = None
    naive = sum((w_a - w_b).pow(2).sum() for w_a, w_b in convs)
    (3.0 * naive).backward()
    for (g_a, g_b), (w_a, w_b) in zip(fast, convs):
        torch.testing.assert_close(g_a, w_a.grad)
        torch.testing.assert_close(g_b, w_b.grad)
    exact = sum(float((w_a.double() - w_b.double()).pow(2).sum()) for w_a, w_b in convs)
    assert float(parameter_distance(a, b)) == pytest.approx(exact, rel=1e-6)


def test_models_of_another_shape_are_refused():
    a, _ = _pair()
    other = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False))
    with pytest.raises(ValueError, match="no counterpart"):
        parameter_distance(a, other)
    with pytest.raises(ValueError, match="no layer"):
        parameter_distance(nn.Linear(2, 2), nn.Linear(2, 2))
