from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vapl.core.backbones import build_backbone
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED
from vapl.core.refine import (
    MASK_BLOCK,
    MaskSampler,
    MonotoneWeight,
    PromptRefiner,
    aggregate,
    normalise_attention,
    sample_seed,
    score_masks,
)


def _prompt(size: int = 12) -> torch.Tensor:
    prompt = torch.full((size, size), UNDECIDED)
    prompt[2:5, 2:5] = INDISPENSABLE
    prompt[:, -3:] = PRECLUDED
    return prompt


# ----- g -------------------------------------------------------------------------------------
@given(seed=st.integers(0, 2**31 - 1), positivity=st.sampled_from(["exp", "tanh"]))
@settings(max_examples=40, deadline=None)
def test_g_is_zero_at_zero_and_non_decreasing_for_any_weights(seed, positivity):
    torch.manual_seed(seed)
    g = MonotoneWeight(hidden=8, depth=2, positivity=positivity)
    with torch.no_grad():
        for raw in g.raw_weights:
            raw.copy_(torch.randn_like(raw) * 3)
        scores = torch.linspace(0, 1, 201)
        values = g(scores)
    assert values[0].item() == 0.0
    # Exact in real arithmetic; float rounding of tanh and sums may wobble in the last digits.
    tolerance = 1e-6 * values.abs().max().clamp_min(1.0)
    assert bool((values[1:] - values[:-1] >= -tolerance).all())


def test_aggregation_loss_is_zero_exactly_when_g_of_one_is_one():
    g = MonotoneWeight(hidden=4)
    with torch.no_grad():
        g_one = g(torch.ones(1))[0]
        assert g.aggregation_loss().item() == pytest.approx((g_one.item() - 1) ** 2)
        g.raw_weights[-1] -= torch.log(g_one)  # the last layer is linear: this rescales g by 1/g(1)
        assert g(torch.ones(1))[0].item() == pytest.approx(1.0, abs=1e-6)
        assert g.aggregation_loss().item() < 1e-12


# ----- masks ----------------------------------------------------------------------------------
def test_masks_follow_the_prompt_and_p():
    prompt = _prompt(32)
    masks = MaskSampler(n_masks=400, p=0.25).all_masks(prompt, seed=3)
    assert masks.shape == (400, 32, 32)
    assert bool((masks[:, prompt == INDISPENSABLE] == 1).all())
    assert bool((masks[:, prompt == PRECLUDED] == 0).all())
    rate = masks[:, prompt == UNDECIDED].mean().item()
    assert rate == pytest.approx(0.25, abs=0.01)


def test_masks_are_reproducible_and_independent_of_the_chunk_size():
    sampler = MaskSampler(n_masks=50, p=0.3)
    prompt = _prompt()
    whole = sampler.all_masks(prompt, seed=11)
    chunked = torch.cat([m for _, m in sampler.chunks(prompt, seed=11, chunk_size=MASK_BLOCK)])
    assert torch.equal(whole, chunked)
    assert not torch.equal(whole, sampler.all_masks(prompt, seed=12))


def test_cells_switch_k_by_k_pixels_together():
    prompt = torch.full((8, 8), UNDECIDED)
    masks = MaskSampler(n_masks=32, p=0.5, cell_size=4).all_masks(prompt, seed=0)
    cells = masks.view(32, 2, 4, 2, 4)
    assert bool((cells == cells[:, :, :1, :, :1]).all())


def test_sample_seed_is_stable_and_distinguishes_epoch_and_sample():
    assert sample_seed(0, 1, "a") == sample_seed(0, 1, "a")
    assert len({sample_seed(0, 1, "a"), sample_seed(0, 2, "a"), sample_seed(0, 1, "b")}) == 3


# ----- refinement -----------------------------------------------------------------------------
class _MeanModel(torch.nn.Module):
    """Two-class 'model': logit of class 1 grows with the mean of the top-left quarter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        signal = x[..., : h // 2, : w // 2].mean(dim=(1, 2, 3)) * 4
        return torch.stack([-signal, signal], dim=1)


def test_identity_g_equals_eq1_computed_the_slow_way():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 12, 12)
    prompts = torch.stack([_prompt(), torch.full((12, 12), UNDECIDED)])
    seeds = [5, 6]
    model = _MeanModel()
    for mode in ("paper", "total_weight"):
        refiner = PromptRefiner(n_masks=40, p=0.2, chunk_size=16, normalization=mode)
        refined = refiner(model, images, prompts, seeds, targets=torch.tensor([1, 0]))
        expected = []
        for image, prompt, seed, target in zip(images, prompts, seeds, [1, 0]):
            total, weight = torch.zeros(12, 12), 0.0
            for mask in refiner.sampler.all_masks(prompt, seed):
                score = torch.softmax(model((image * mask)[None]), dim=1)[0, target]
                total += score * mask
                weight += float(score)
            attention = total / (40 * refiner.sampler.p_exact)
            always_on = weight / (40 * refiner.sampler.p_exact)
            expected.append(attention if mode == "paper" else attention / always_on)
        assert torch.allclose(refined, torch.stack(expected), atol=1e-5), mode


def test_precluded_pixels_of_a_are_zero_and_indispensable_are_one():
    prompt = _prompt()
    refiner = PromptRefiner(n_masks=32, p=0.1, weight_fn=MonotoneWeight())
    refined = refiner(_MeanModel(), torch.rand(1, 1, 12, 12), prompt[None], [0])[0]
    assert bool((refined[prompt == PRECLUDED] == 0).all())
    assert torch.allclose(refined[prompt == INDISPENSABLE], torch.ones(9))
    assert bool(((refined >= 0) & (refined <= 1)).all())


def test_aggregate_gradient_matches_the_stored_mask_computation():
    sampler = MaskSampler(n_masks=37, p=0.3)
    prompts = torch.stack([_prompt(), _prompt()])
    weights = torch.rand(2, 37, requires_grad=True)
    upstream = torch.randn(2, 12, 12)
    (aggregate(weights, prompts, [1, 2], sampler, chunk_size=16) * upstream).sum().backward()
    masks = torch.stack([sampler.all_masks(p, s) for p, s in zip(prompts, [1, 2])])
    reference = weights.detach().clone().requires_grad_(True)
    dense = torch.einsum("bn,bnhw->bhw", reference, masks) / (37 * 0.3)
    (dense * upstream).sum().backward()
    assert torch.allclose(weights.grad, reference.grad, atol=1e-5)


def test_scores_are_chunked_and_the_model_never_sees_more_than_a_chunk():
    seen: list[int] = []
    model = build_backbone("tiny", num_classes=3, in_channels=1).eval()

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return model(x)

    probs = score_masks(
        spy,
        torch.rand(2, 1, 12, 12),
        torch.stack([_prompt()] * 2),
        [0, 1],
        MaskSampler(100, 0.1),
        chunk_size=32,
    )
    assert probs.shape == (2, 100, 3)
    assert max(seen) <= 32 and sum(seen) == 200
    assert torch.allclose(probs.sum(-1), torch.ones(2, 100))


def test_target_scores_without_labels_use_the_class_with_the_highest_mean_probability():
    probs = torch.tensor([[[0.7, 0.3], [0.2, 0.8], [0.3, 0.7]]])  # mean: 0.4, 0.6 -> class 1
    assert torch.allclose(PromptRefiner.target_scores(probs, None), torch.tensor([[0.3, 0.8, 0.7]]))
    labelled = PromptRefiner.target_scores(probs, torch.tensor([0]))
    assert torch.allclose(labelled, torch.tensor([[0.7, 0.2, 0.3]]))


def test_normalise_attention_by_maximum_and_by_total_weight():
    attention = torch.tensor([[[1.0, 2.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    weights = torch.tensor([[1.0, 7.0], [0.5, 1.5]])  # always-on values 8 / 2 and 2 / 2
    out = normalise_attention(attention, weights, 2.0, "max")
    assert out[0].tolist() == [[0.25, 0.5], [0.0, 1.0]]
    assert out[1].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    out = normalise_attention(attention, weights, 2.0, "total_weight")
    assert out[0].tolist() == [[0.25, 0.5], [0.0, 1.0]]
    assert torch.equal(normalise_attention(attention, weights, 2.0, "paper"), attention)
    with pytest.raises(ValueError, match="normalization"):
        normalise_attention(attention, weights, 2.0, "peak")


def test_eq_3_under_paper_normalisation_by_hand():
    """Three pixels (indispensable, undecided, precluded), N = 4 balanced masks with p = 0.5: the
    undecided pixel is on in exactly k = 2 masks. A = sum_i g(s_i) M_i / k."""
    prompt = torch.tensor([[[INDISPENSABLE, UNDECIDED, PRECLUDED]]])
    refiner = PromptRefiner(n_masks=4, p=0.5, balanced=True, normalization="paper")
    on = refiner.sampler.all_masks(prompt[0], 5)[:, 0, 1]  # the undecided pixel in each mask
    assert on.sum() == 2
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    refined = refiner.refine_from_scores(scores, prompt, [5])[0, 0]
    kept = sum(s for s, m in zip([0.1, 0.2, 0.3, 0.4], on.tolist()) if m)
    assert refined.tolist() == pytest.approx([(0.1 + 0.2 + 0.3 + 0.4) / 2, kept / 2, 0.0])
    # i.i.d. masks divide by N p (p as the sampler rounds it)
    iid = PromptRefiner(n_masks=3, p=1.0, normalization="paper")
    out = iid.refine_from_scores(torch.tensor([[0.2, 0.3, 0.7]]), prompt, [0])[0, 0]
    assert out.tolist() == pytest.approx([1.2 / 3, 1.2 / 3, 0.0])


def _undecided_mean(mode: str, prompt: torch.Tensor, weights: torch.Tensor) -> float:
    refiner = PromptRefiner(n_masks=weights.shape[1], p=0.1, normalization=mode)
    refined = refiner.refine_from_scores(weights, prompt[None], [3])[0]
    return float(refined[prompt == UNDECIDED].mean())


@pytest.mark.parametrize("mode", ["paper", "total_weight", "max"])
def test_one_or_no_indispensable_pixel_gives_close_undecided_values(mode):
    """Adding one indispensable pixel to a prompt barely changes the undecided pixels under the
    paper's and the scale-free normalisation; dividing by the maximum jumps (about p against
    about 0.8)."""
    weights = torch.rand(1, 64, generator=torch.Generator().manual_seed(0))
    none = torch.full((16, 16), UNDECIDED)
    one = none.clone()
    one[0, 0] = INDISPENSABLE
    without, with_one = _undecided_mean(mode, none, weights), _undecided_mean(mode, one, weights)
    if mode == "max":
        assert without > 3 * with_one
    else:
        assert abs(without - with_one) < 0.01


def test_the_scale_of_g_matters_under_paper_and_not_under_total_weight():
    prompt = _prompt()[None]
    weights = torch.rand(1, 40, generator=torch.Generator().manual_seed(1))
    for mode, changes in (("paper", True), ("total_weight", False), ("max", False)):
        refiner = PromptRefiner(n_masks=40, p=0.2, normalization=mode)
        a = refiner.refine_from_scores(weights, prompt, [9])
        b = refiner.refine_from_scores(3 * weights, prompt, [9])
        assert torch.allclose(b, 3 * a if changes else a, atol=1e-6), mode
        if changes:
            assert not torch.allclose(a, b)


def test_the_scale_of_g_reaches_f_ms_input_only_under_paper():
    """L_Agg = (g(1) - 1)^2 anchors g's scale; that scale moves the refined prompt (a non-zero
    gradient) under ``paper`` only."""
    prompt = _prompt()[None]
    scores = torch.rand(1, 32, generator=torch.Generator().manual_seed(2))
    for mode in ("paper", "total_weight"):
        scale = torch.ones((), requires_grad=True)
        refiner = PromptRefiner(n_masks=32, p=0.2, normalization=mode)
        refined = refiner.refine_from_scores(scores * scale, prompt, [4])
        (grad,) = torch.autograd.grad(refined.sum(), scale)
        assert (abs(float(grad)) > 1e-3) == (mode == "paper"), (mode, float(grad))


_MEMORY_PROBE = """
import json, resource, sys, torch
from vapl.core.refine import MonotoneWeight, PromptRefiner
torch.set_num_threads(1)
n = int(sys.argv[1])
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(96 * 96, 2))
prompt = torch.full((1, 96, 96), -1.0)
refiner = PromptRefiner(n_masks=n, p=0.1, chunk_size=32, weight_fn=MonotoneWeight())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scores = refiner.target_scores(refiner.score(model, torch.rand(1, 1, 96, 96), prompt, [0]), None)
refiner.refine_from_scores(scores.clone(), prompt, [0]).sum().backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before}))
"""


def _peak_growth_kib(n_masks: int) -> int:
    # glibc serves freed 1 MiB chunks from a growing heap after its mmap threshold adapts, which
    # shows up as RSS growth without any tensor being held; a fixed threshold measures allocations.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(n_masks)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_kib"]


def test_memory_does_not_grow_with_the_number_of_masks_at_fixed_chunk_size():
    # Holding all 4096 masks of a 96 x 96 prompt would take 4096 * 96 * 96 * 4 B = 144 MiB.
    small, large = _peak_growth_kib(64), _peak_growth_kib(4096)
    assert large - small < 16 * 1024, (small, large)
