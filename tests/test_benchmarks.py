"""The benchmarks' own pieces: the reference loop they time the engine against, and the ratios."""

from __future__ import annotations

import pytest
import torch

from benchmarks.common import one_mask_per_pass, prompted_batch, round_ratio
from vapl.core.backbones import build_backbone
from vapl.core.refine import MonotoneWeight, PromptRefiner


@pytest.mark.parametrize("balanced", [False, True])
def test_the_one_mask_per_pass_reference_gives_the_engines_refined_prompts(balanced):
    torch.manual_seed(0)
    model = build_backbone("tiny", num_classes=2, in_channels=3).eval()
    images, prompts, labels, seeds = prompted_batch(3, 16, channels=3)
    refiner = PromptRefiner(40, 0.1, chunk_size=24, weight_fn=MonotoneWeight(), balanced=balanced)
    with torch.no_grad():
        engine = refiner(model, images, prompts, seeds, labels)
    reference = one_mask_per_pass(
        model, images, prompts, seeds, labels, refiner.sampler, refiner.weight_fn
    )
    assert torch.allclose(engine, reference, atol=1e-5, rtol=0)


def test_round_ratio_is_the_median_of_side_by_side_ratios():
    times = {"a": [2.0, 9.0, 3.0, 4.0], "b": [1.0, 3.0, 1.0, 1.0]}  # ratios 2, 3, 3, 4
    assert round_ratio(times, "a", "b") == 3.0
    assert round_ratio({"a": [2.0, 6.0, 1.0], "b": [1.0, 1.0, 1.0]}, "a", "b") == 2.0
