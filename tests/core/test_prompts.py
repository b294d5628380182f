from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vapl.core.prompts import (
    UNDECIDED,
    PromptError,
    empty_prompt,
    prompt_from_masks,
    resize_prompt,
    simulate_incomplete,
    validate_prompt,
)


def test_validate_names_the_source_and_the_bad_values():
    bad = torch.tensor([[1.0, 0.5], [-1.0, 2.0]])
    with pytest.raises(PromptError, match=r"case-7\.npy.*\[0\.5, 2\.0\]"):
        validate_prompt(bad, source="case-7.npy")


def test_validate_rejects_wrong_shape_against_the_image():
    with pytest.raises(PromptError, match=r"img\.png.*\(2, 3\).*\(3, 2\)"):
        validate_prompt(torch.zeros(2, 3), shape=(3, 2), source="img.png")


def test_prompt_from_masks_precluded_wins_where_both_are_set():
    indispensable = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    precluded = np.array([[0, 1, 0], [0, 0, 1]], dtype=bool)
    prompt = prompt_from_masks(indispensable, precluded)
    expected = torch.tensor([[1.0, 0.0, -1.0], [-1.0, -1.0, 0.0]])
    assert torch.equal(prompt, expected)


def test_empty_prompt_is_all_undecided():
    assert torch.equal(empty_prompt(2, 3), torch.full((2, 3), UNDECIDED))


def test_resize_prompt_keeps_the_three_values():
    prompt = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    resized = resize_prompt(prompt, (4, 4))
    assert set(resized.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.equal(resized[:2, :2], torch.ones(2, 2))


def _disk(size: int, radius: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) <= radius**2


@given(keep=st.floats(0.1, 1.0), seed=st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_incomplete_keeps_about_the_fraction_and_stays_near_the_region(keep, seed):
    region = _disk(32, 8)
    generator = torch.Generator().manual_seed(seed)
    kept = simulate_incomplete(region, keep_fraction=keep, jitter=0, generator=generator)
    assert abs(kept.sum().item() - keep * region.sum().item()) <= 1
    assert not bool((kept & ~region).any())
    jittered = simulate_incomplete(region, keep_fraction=keep, jitter=2, generator=generator)
    grown = torch.nn.functional.max_pool2d(region[None, None].float(), 5, 1, 2)[0, 0] > 0
    assert bool(jittered.any()) and not bool((jittered & ~grown).any())


def test_incomplete_of_an_empty_region_is_empty():
    assert not simulate_incomplete(torch.zeros(8, 8, dtype=torch.bool), 0.5).any()
