"""The CAM-guided attention losses (GRADIA, HAICS, RES-G, RES-L) on hand-computed tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vapl.core.losses import (
    FactualImputation,
    coarse_annotation,
    factual_map_distance,
    gaussian_kernel,
    gradia_loss,
    haics_loss,
    res_encoding,
    res_g_loss,
    res_l_loss,
    robust_loss,
    robust_threshold,
    scale_to_peak,
    smoothed_factual_map,
)
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED


def grid(*rows: list[float]) -> torch.Tensor:
    return torch.tensor([list(r) for r in rows])[None]


def test_res_encoding():
    prompt = torch.tensor([[INDISPENSABLE, PRECLUDED], [UNDECIDED, INDISPENSABLE]])
    assert res_encoding(prompt).tolist() == [[1.0, -1.0], [0.0, 1.0]]
    assert res_encoding(torch.full((2, 2), UNDECIDED)).abs().sum() == 0


def test_coarse_annotation_is_the_area_fraction():
    res = grid([1, 1, 0, -1], [1, 0, -1, -1], [0, 0, 0, 0], [1, 0, 0, 0])
    factual, counterfactual = coarse_annotation(res, (2, 2))
    assert factual.tolist() == [[[0.75, 0.0], [0.25, 0.0]]]
    assert counterfactual.tolist() == [[[0.0, 0.75], [0.0, 0.0]]]


def test_gradia_loss_by_hand():
    cam = torch.cat([grid([0.2, 0.8], [1.0, 0.0]), grid([0.5, 0.5], [0.5, 0.5])])
    factual = torch.cat([grid([1.0, 0.0], [0.5, 0.0]), torch.zeros(1, 2, 2)])
    # sample 0: |0.2 - 1| + |0.8 - 0| + |1 - 0.5| + 0 = 2.1 over 4 cells; sample 1 has no
    # factual cell and does not count.
    torch.testing.assert_close(gradia_loss(cam, factual), torch.tensor(0.525), atol=1e-5, rtol=0)
    # the positive map is scaled to peak at 1: half-covered cells count as fully covered
    torch.testing.assert_close(
        gradia_loss(cam[:1], 0.5 * factual[:1]), torch.tensor(0.525), atol=1e-5, rtol=0
    )


def test_haics_loss_by_hand():
    cam = grid([0.5, 0.25], [0.9, 0.1])
    factual = grid([1.0, 0.0], [0.5, 0.0])
    counterfactual = grid([0.0, 1.0], [0.25, 0.0])
    # every annotated pixel once: BCE(0.5, 1) + BCE(0.25, 0) + 0.5 BCE(0.9, 1) + 0.25 BCE(0.9, 0),
    # over 1 + 1 + 0.75 annotated cells; the unannotated cell (0.1) does not count.
    expected = (-math.log(0.5) - math.log(0.75) - 0.5 * math.log(0.9) - 0.25 * math.log(0.1)) / 2.75
    torch.testing.assert_close(
        haics_loss(cam, factual, counterfactual), torch.tensor(expected), atol=1e-5, rtol=0
    )


def test_robust_threshold_by_hand():
    # factual cells at 0.9, 0.8, 0.3; counterfactual at 0.1, 0.2, 0.85. Satisfied fractions:
    # 0.1001 -> 1/3 + 1, 0.2001 -> 2/3 + 1, 0.8501 -> 1 + 1/3, 0.9 -> 1 + 1/3, 0.8 -> 2/3 + 2/3,
    # 0.3 -> 2/3 + 1: the first best is 0.2 + eps.
    cam = grid([0.9, 0.8, 0.3], [0.1, 0.2, 0.85])
    factual = grid([1, 1, 1], [0, 0, 0]).float()
    counterfactual = grid([0, 0, 0], [1, 1, 1]).float()
    torch.testing.assert_close(robust_threshold(cam, factual, counterfactual), torch.tensor(0.2001))
    # one kind only: all factual cells at or above the lowest factual value
    assert robust_threshold(cam, factual, torch.zeros_like(factual)) == pytest.approx(0.3)
    assert robust_threshold(cam, torch.zeros_like(cam), torch.zeros_like(cam)) == 0.0


def brute_force_threshold(values, fact_w, count_w, eps=1e-4):
    """A literal reading of the reference solver (weighted), to compare the sorted version with."""
    candidates = [v + eps for v, w in zip(values, count_w) if w > 0]
    candidates += [v for v, w in zip(values, fact_w) if w > 0]
    best, best_score = 0.0, -1.0
    for c in candidates:
        score = 0.0
        if sum(count_w):
            score += sum(w for v, w in zip(values, count_w) if w > 0 and v < c) / sum(count_w)
        if sum(fact_w):
            score += sum(w for v, w in zip(values, fact_w) if w > 0 and v >= c) / sum(fact_w)
        if score > best_score + 1e-6:
            best, best_score = c, score
    return best


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 20).map(lambda v: v / 20),
            st.sampled_from([0.0, 0.5, 1.0]),
            st.sampled_from([0.0, 0.25, 1.0]),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_robust_threshold_matches_brute_force(cells):
    values, fact_w, count_w = (list(c) for c in zip(*cells))
    cam = torch.tensor(values, dtype=torch.float64)[None, None]
    found = robust_threshold(
        cam,
        torch.tensor(fact_w, dtype=torch.float64)[None, None],
        torch.tensor(count_w, dtype=torch.float64)[None, None],
    )
    assert float(found) == pytest.approx(brute_force_threshold(values, fact_w, count_w))


def test_robust_loss_by_hand():
    cam = grid([0.9, 0.1], [0.5, 0.0])
    factual = grid([1.0, 0.0], [1.0, 0.0])
    counterfactual = grid([0.0, 1.0], [0.0, 0.0])
    # a = 0.5, sharpness 5: tanh(+-2) misses its target by 1 - tanh(2); the factual cell at a
    # misses by 1; the unknown cell does not count.
    miss = 1 - math.tanh(2.0)
    expected = (2 * miss + 1) / 3
    loss = robust_loss(cam, factual, counterfactual, threshold=0.5)
    torch.testing.assert_close(loss, torch.tensor(expected), atol=1e-6, rtol=0)
    assert robust_loss(cam, factual, counterfactual, 0.5, eta=0.4) == 0.0  # within tolerance
    torch.testing.assert_close(
        robust_loss(cam, factual, counterfactual, 0.5, eta=0.1),
        torch.tensor(expected - 0.1),
        atol=1e-6,
        rtol=0,
    )
    # a cell half factual, half counterfactual at the threshold costs 1 for one cell's weight
    mixed = robust_loss(
        torch.cat([cam, grid([0.5, 0.5], [0.5, 0.5])]),
        torch.cat([factual, grid([0.5, 0.0], [0.0, 0.0])]),
        torch.cat([counterfactual, grid([0.5, 0.0], [0.0, 0.0])]),
        threshold=0.5,
    )
    torch.testing.assert_close(mixed, torch.tensor((2 * miss + 2) / 4), atol=1e-6, rtol=0)


def test_gaussian_kernel_matches_opencv_defaults():
    assert gaussian_kernel(3).tolist() == [
        [0.0625, 0.125, 0.0625],
        [0.125, 0.25, 0.125],
        [0.0625, 0.125, 0.0625],
    ]
    kernel = gaussian_kernel(3, sigma=1.0)
    edge = math.exp(-0.5) / (1 + 2 * math.exp(-0.5))
    assert kernel[0, 1].item() == pytest.approx(edge * (1 - 2 * edge))
    assert gaussian_kernel(9).sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        gaussian_kernel(4)


def test_smoothed_factual_map_by_hand():
    factual = torch.zeros(1, 5, 5)
    factual[0, 2, 2] = 1.0
    smoothed = smoothed_factual_map(factual)
    # [1, 2, 1] / 4 in both directions, scaled to peak 1
    assert smoothed[0, 2, 2].item() == pytest.approx(1.0, abs=1e-5)
    assert smoothed[0, 1, 2].item() == pytest.approx(0.5, abs=1e-5)
    assert smoothed[0, 1, 1].item() == pytest.approx(0.25, abs=1e-5)
    assert smoothed[0, 0, 0].item() == 0.0
    # borders reflect without repeating the edge: (0, 0) sees (1, 1) four times
    corner = torch.zeros(1, 4, 4)
    corner[0, 1, 1] = 1.0
    smoothed = smoothed_factual_map(corner)
    assert smoothed[0, 0, 0].item() == pytest.approx(smoothed[0, 1, 1].item())


def test_res_g_loss_is_robust_term_plus_smoothed_distance():
    torch.manual_seed(0)
    cam = torch.rand(2, 4, 4)
    factual = (torch.rand(2, 4, 4) > 0.6).float()
    counterfactual = (1 - factual) * (torch.rand(2, 4, 4) > 0.5).float()
    threshold = robust_threshold(cam, factual, counterfactual)
    expected = robust_loss(cam, factual, counterfactual, threshold) + factual_map_distance(
        cam, smoothed_factual_map(factual), factual
    )
    torch.testing.assert_close(res_g_loss(cam, factual, counterfactual), expected)


def test_res_l_loss_with_imputation():
    imputation = FactualImputation(stride=4)
    mask = torch.zeros(2, 32, 32)
    mask[0, 8:20, 8:20] = 1.0
    imputed = imputation(mask, (8, 8))
    assert imputed.shape == (2, 8, 8)
    assert imputed.min() >= 0 and imputed.max() <= 1
    cam = torch.rand(2, 8, 8, requires_grad=True)
    factual, counterfactual = coarse_annotation(mask, (8, 8))
    loss = res_l_loss(cam, factual, counterfactual, imputed)
    expected = (
        robust_loss(cam, factual, counterfactual, robust_threshold(cam, factual, counterfactual))
        + (cam[:1] - imputed[:1]).abs().mean()
    )
    torch.testing.assert_close(loss, expected)
    with_reg = res_l_loss(cam, factual, counterfactual, imputed, imputation_reg=2.0)
    torch.testing.assert_close(with_reg, expected + 2.0 * (imputed[:1] - factual[:1]).pow(2).mean())
    loss.backward()
    assert imputation.conv.weight.grad.abs().sum() > 0  # trained with the network
    assert cam.grad.abs().sum() > 0
    resized = imputation(mask, (6, 6))  # a CAM of another size: the imputation follows it
    assert resized.shape == (2, 6, 6)


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda c, f, cf: gradia_loss(c, f),
        haics_loss,
        lambda c, f, cf: robust_loss(c, f, cf, robust_threshold(c, f, cf)),
        res_g_loss,
        lambda c, f, cf: res_l_loss(c, f, cf, torch.rand_like(c)),
    ],
    ids=["gradia", "haics", "robust", "res_g", "res_l"],
)
def test_no_annotated_pixel_gives_zero_not_nan(loss_fn):
    cam = torch.rand(2, 3, 3, requires_grad=True)
    zeros = torch.zeros(2, 3, 3)
    loss = loss_fn(cam, zeros, zeros)
    assert loss.item() == 0.0
    loss.backward()  # still in the graph
    assert torch.isfinite(cam.grad).all()


def test_scale_to_peak():
    maps = torch.tensor([[[0.0, 0.25], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    scaled = scale_to_peak(maps, eps=0.0)
    assert scaled[0].tolist() == [[0.0, 0.5], [1.0, 0.0]]
    assert torch.isnan(scaled[1]).all()  # eps guards this case
    assert scale_to_peak(maps)[1].abs().sum() == 0
