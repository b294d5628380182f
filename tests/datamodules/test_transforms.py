"""Joint transforms move image, prompt and explanation together, and pad without instructions."""

from __future__ import annotations

import torch

from datamodules.transforms import JointCompose, JointRandomCrop, JointRandomFlip
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED


def marked_sample(row: int, col: int, size: int = 7) -> dict:
    """A sample whose image, prompt and explanation each mark the pixel (row, col)."""
    image = torch.zeros(2, size, size)
    image[:, row, col] = 5.0
    prompt = torch.full((size, size), UNDECIDED)
    prompt[row, col] = INDISPENSABLE
    prompt[0, 0] = PRECLUDED
    explanation = torch.zeros(size, size)
    explanation[row, col] = 1.0
    return {"image": image, "prompt": prompt, "explanation": explanation, "label": 3, "id": "a"}


def position(plane: torch.Tensor, value: float) -> tuple[int, ...]:
    hits = torch.nonzero(plane == value)
    assert len(hits) == 1, f"expected one pixel of value {value}, found {len(hits)}"
    return tuple(hits[0].tolist())


def test_flip_moves_all_spatial_entries_together():
    sample = marked_sample(1, 2)
    out = JointRandomFlip(p=1.0, vertical=True)(sample)
    assert position(out["image"][0], 5.0) == (5, 4)
    assert position(out["prompt"], INDISPENSABLE) == (5, 4)
    assert position(out["explanation"], 1.0) == (5, 4)
    assert position(out["prompt"], PRECLUDED) == (6, 6)
    assert out["label"] == 3 and out["id"] == "a"


def test_crop_shifts_all_spatial_entries_by_the_same_offset():
    torch.manual_seed(0)
    crop = JointRandomCrop(padding=2)
    shifts = set()
    for _ in range(30):
        out = crop(marked_sample(3, 3))
        where = position(out["image"][1], 5.0)
        assert position(out["prompt"], INDISPENSABLE) == where
        assert position(out["explanation"], 1.0) == where
        shifts.add((where[0] - 3, where[1] - 3))
        assert out["image"].shape == (2, 7, 7) and out["prompt"].shape == (7, 7)
    # Offsets of -2..2 in each direction; 30 draws see several of the 25.
    assert len(shifts) > 5
    assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in shifts)


def test_crop_pads_prompt_undecided_and_explanation_zero():
    sample = {
        "image": torch.ones(1, 4, 4),
        "prompt": torch.ones(4, 4),
        "explanation": torch.ones(4, 4),
    }
    torch.manual_seed(1)
    for _ in range(20):
        out = JointRandomCrop(padding=2, image_fill=-3.0)(sample)
        outside = out["image"][0] == -3.0  # pixels that came from the padding
        assert bool((out["prompt"][outside] == UNDECIDED).all())
        assert bool((out["explanation"][outside] == 0.0).all())
        assert bool((out["prompt"][~outside] == 1.0).all())
        assert int((~outside).sum()) >= 4  # a 2-pixel pad never moves the 4x4 image fully out


def test_crop_without_padding_and_compose_order():
    sample = marked_sample(2, 5)
    assert JointRandomCrop(padding=0)(sample) is sample
    out = JointCompose([JointRandomFlip(p=1.0), JointRandomCrop(padding=0)])(sample)
    assert position(out["explanation"], 1.0) == (2, 1)
