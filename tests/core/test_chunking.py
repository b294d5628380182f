"""The automatic chunk size: the rule on tiny inputs, an explicit value overrides it, and the
refined prompt does not depend on it beyond float tolerance."""

from __future__ import annotations

import pytest
import torch

from vapl.core import chunking
from vapl.core.backbones import build_backbone
from vapl.core.chunking import auto_chunk_size
from vapl.core.refine import MonotoneWeight, PromptRefiner


@pytest.mark.parametrize(
    ("size", "expected"),
    [(4, 8192), (32, 256), (28, 334), (48, 113), (64, 64), (128, 16), (224, 8)],  # 2**18 px
)
def test_the_cpu_rule_fills_a_pixel_budget_within_the_bounds(size, expected):
    assert auto_chunk_size(size, size) == expected


def test_the_chunk_is_never_larger_than_the_pairs_to_score():
    assert auto_chunk_size(32, 32, pairs=40) == 40
    assert auto_chunk_size(224, 224, pairs=3) == 3


def test_on_a_gpu_the_free_memory_caps_the_chunk(monkeypatch):
    free = {"bytes": 80 * 2**30}
    monkeypatch.setattr(
        torch.cuda, "mem_get_info", lambda device: (free["bytes"], 2 * free["bytes"])
    )
    assert auto_chunk_size(32, 32, "cuda") == 8192  # the budget (2**23 px) and MAX_CHUNK
    assert auto_chunk_size(224, 224, "cuda") == 2**23 // (224 * 224)
    free["bytes"] = 2**30  # 1 GiB free: half of it at 2 KiB a pixel is 2**18 px
    assert auto_chunk_size(224, 224, "cuda") == max(chunking.MIN_CHUNK, 2**18 // (224 * 224))
    assert auto_chunk_size(32, 32, "cuda") == 2**18 // (32 * 32)


class _BatchSizes(torch.nn.Module):
    """The tiny CNN, recording the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = build_backbone("tiny", num_classes=2, in_channels=1).eval()
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.net(x)


def _inputs(size: int = 16, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 1, size, size, generator=generator)
    prompts = torch.randint(-1, 2, (batch, size, size), generator=generator).float()
    return images, prompts, [11, 12, 13][:batch]


def test_none_chooses_the_chunk_and_an_explicit_value_overrides_it():
    images, prompts, seeds = _inputs(size=32)  # 2**18 / 1024 = 256 images a chunk
    model = _BatchSizes()
    PromptRefiner(n_masks=200, chunk_size=None)(model, images, prompts, seeds)
    assert model.sizes == [256, 256, 88]  # 600 (sample, mask) pairs
    model.sizes.clear()
    PromptRefiner(n_masks=200, chunk_size=64)(model, images, prompts, seeds)
    assert set(model.sizes[:-1]) == {64} and sum(model.sizes) == 600


def test_the_refined_prompt_agrees_with_a_fixed_chunk_to_float_tolerance():
    images, prompts, seeds = _inputs(size=16)
    model = _BatchSizes()
    weight_fn = MonotoneWeight()
    automatic = PromptRefiner(n_masks=300, chunk_size=None, weight_fn=weight_fn)
    fixed = PromptRefiner(n_masks=300, chunk_size=64, weight_fn=weight_fn)
    targets = torch.tensor([0, 1, 0])
    a = automatic(model, images, prompts, seeds, targets)
    b = fixed(model, images, prompts, seeds, targets)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert automatic.score(model, images, prompts, seeds).shape == (3, 300, 2)
