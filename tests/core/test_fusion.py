"""Batch norm folded into convolutions for scoring: same probabilities, refreshed when the
network changes, never used where it would be wrong."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from vapl.core.backbones import build_backbone
from vapl.core.fusion import FoldedBatchNorm
from vapl.core.refine import MonotoneWeight, PromptRefiner


def _network(name: str) -> nn.Module:
    torch.manual_seed(0)
    network = build_backbone(name, num_classes=3, in_channels=2)
    network.train()
    with torch.no_grad():  # statistics and affine parameters away from their defaults
        for _ in range(3):
            network(torch.randn(8, 2, 32, 32) * 2 + 0.5)
        for m in network.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return network.eval()


@pytest.mark.parametrize("name", ["resnet18", "tiny"])
def test_the_folded_copy_computes_the_same_logits_without_batch_norm(name):
    network = _network(name)
    x = torch.randn(5, 2, 32, 32)
    folded = FoldedBatchNorm()(network, x[:1])
    assert folded is not network
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), network(x), rtol=1e-4, atol=1e-5)
    assert all(p.requires_grad for p in network.parameters())  # the network is untouched


def test_a_network_without_batch_norm_or_in_training_mode_is_used_as_it_is():
    fold = FoldedBatchNorm()
    group_norm = build_backbone("tiny_gn", num_classes=2, in_channels=1).eval()
    assert fold(group_norm) is group_norm
    training = _network("tiny").train()
    assert fold(training) is training


def test_the_folded_weights_follow_the_network_after_a_fused_adam_step():
    network = _network("tiny")
    fold = FoldedBatchNorm()
    x = torch.randn(4, 2, 32, 32)
    fold(network, x[:1])
    optimizer = torch.optim.Adam(network.parameters(), lr=0.1, fused=True)  # bumps no version
    network.train()
    network(x * 3 + 1).sum().backward()  # a training step: statistics and weights change
    optimizer.step()
    network.eval()
    folded = fold(network)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), network(x), rtol=1e-4, atol=1e-5)


def test_small_calls_score_unfolded():
    network = _network("tiny")
    refiner = PromptRefiner(n_masks=8)
    images, prompts = torch.randn(2, 2, 32, 32), torch.zeros(2, 32, 32)
    refiner.score(network, images, prompts, [1, 2])  # 16 masked images
    assert refiner.folded._copy is None
    PromptRefiner.score(
        refiner, network, images.repeat(8, 1, 1, 1), prompts.repeat(8, 1, 1), list(range(16))
    )
    assert refiner.folded._copy is not None  # 128 masked images


class _Crossed(nn.Module):
    """``bn1`` normalises ``conv2``'s output: a name pairing that must not be folded."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_a_copy_that_disagrees_with_the_network_is_not_used():
    torch.manual_seed(0)
    network = _Crossed().eval()
    with torch.no_grad():
        network.bn1.running_mean.uniform_(-1, 1)
        network.bn1.running_var.uniform_(0.2, 3.0)
    fold = FoldedBatchNorm()
    assert fold(network, torch.randn(1, 1, 8, 8)) is network
    assert fold(network) is network


def test_the_cache_survives_pickling_and_copying_empty():
    refiner = PromptRefiner(n_masks=8)
    refiner.folded(_network("tiny"), torch.randn(1, 2, 32, 32))
    for clone in (pickle.loads(pickle.dumps(refiner)), copy.deepcopy(refiner)):
        assert clone.folded is not None and clone.folded._copy is None


def test_the_refined_prompt_with_folding_agrees_with_the_unfolded_network():
    network = _network("resnet18")
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(3, 2, 32, 32, generator=generator)
    prompts = torch.randint(-1, 2, (3, 32, 32), generator=generator).float()
    weight_fn = MonotoneWeight()
    folded = PromptRefiner(n_masks=48, weight_fn=weight_fn)  # 144 masked images: folded
    plain = PromptRefiner(n_masks=48, weight_fn=weight_fn, fold_batch_norm=False)
    targets = torch.tensor([0, 1, 2])
    with torch.no_grad():
        a = folded(network, images, prompts, [1, 2, 3], targets)
        b = plain(network, images, prompts, [1, 2, 3], targets)
    assert folded.folded._copy is not None
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
