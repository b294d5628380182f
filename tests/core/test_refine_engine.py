"""Fast refinement paths against a plain one; the balanced sampler; reproducibility; autocast."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vapl.core.backbones import build_backbone
from vapl.core.masks import MASK_BLOCK, MaskSampler, block_seed, random_words
from vapl.core.prompts import INDISPENSABLE, PRECLUDED, UNDECIDED
from vapl.core.refine import MonotoneWeight, PromptRefiner, aggregate, score_masks


def _prompts(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.full((batch, size, size), UNDECIDED)
    for b in range(batch):
        y, x = torch.randint(0, size - 4, (2,), generator=generator).tolist()
        prompts[b, y : y + 3, x : x + 3] = INDISPENSABLE
        prompts[b, :, -(b % 3) - 1 :] = PRECLUDED
    return prompts


def _splitmix64(key: int, j: int) -> int:
    """SplitMix64's word ``j`` for ``key``, in Python integers (the specification)."""
    mask = 2**64 - 1
    z = (key + (j + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def _plain_iid_masks(prompt: torch.Tensor, seed: int, n_masks: int, p: float) -> torch.Tensor:
    """The i.i.d. masks as specified: block by block from SplitMix64 keyed by (seed, block),
    each pixel 16 random bits (little-endian slices of 64-bit words) read as a signed integer s,
    on when ``s + 2^15 < round(p 2^16)``."""
    blocks = []
    for index in range(-(-n_masks // MASK_BLOCK)):
        count = min(MASK_BLOCK, n_masks - index * MASK_BLOCK)
        key = block_seed(seed, index)
        size = count * prompt.numel()
        words = [_splitmix64(key, j) for j in range(-(-size // 4))]
        unsigned = [(w >> (16 * lane)) & 0xFFFF for w in words for lane in range(4)]
        signed = torch.tensor([u - 2**16 if u >= 2**15 else u for u in unsigned[:size]])
        draw = (signed + 2**15).view(count, *prompt.shape) < round(p * 2**16)
        blocks.append(((prompt == INDISPENSABLE) | ((prompt == UNDECIDED) & draw)).float())
    return torch.cat(blocks)


def _plain_refinement(refiner, model, images, prompts, seeds, targets):
    """Eq. 3 one mask at a time: score ``I * M_i``, add ``g(s_i) M_i``, divide, normalise."""
    sampler = refiner.sampler
    out = []
    for image, prompt, seed, target in zip(images, prompts, seeds, targets):
        masks = sampler.all_masks(prompt, seed)
        with torch.no_grad():
            scores = torch.stack(
                [torch.softmax(model((image * mask)[None]), dim=1)[0, target] for mask in masks]
            )
            weights = refiner.weights(scores)
        total = sum(w * m for w, m in zip(weights, masks)) / sampler.normaliser
        out.append(total / total.max())
    return torch.stack(out)


class _MeanModel(torch.nn.Module):
    """Two classes: the logit of class 1 grows with the mean of the top-left quarter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        signal = x[..., : h // 2, : w // 2].mean(dim=(1, 2, 3)) * 4
        return torch.stack([-signal, signal], dim=1)


# ----- the fast paths give the plain path's refined prompts -----------------------------------
def test_iid_masks_are_the_specified_ones_and_p_one_keeps_every_pixel():
    prompt = _prompts(1, 12)[0]
    sampler = MaskSampler(n_masks=53, p=0.3)
    assert torch.equal(sampler.all_masks(prompt, 7), _plain_iid_masks(prompt, 7, 53, 0.3))
    assert sampler.p_exact == round(0.3 * 2**16) / 2**16 and abs(sampler.p_exact - 0.3) < 2**-17
    everything = MaskSampler(n_masks=20, p=1.0).all_masks(prompt, 7)
    assert torch.equal(everything, (prompt != PRECLUDED).float().expand(20, 12, 12))


def test_random_words_are_splitmix64_for_any_key():
    for key in (0, 7, 2**63 - 2, block_seed(123456789, 5)):
        words = random_words(key, 9).tolist()
        assert [w % 2**64 for w in words] == [_splitmix64(key, j) for j in range(9)]


@pytest.mark.parametrize("balanced", [False, True])
def test_the_same_seed_draws_the_same_masks_on_every_device(balanced):
    """Masks are exact integer arithmetic: CUDA (where present) draws the CPU's masks; on the CPU
    the masks are checked against the Python specification above."""
    prompt = _prompts(1, 10)[0]
    sampler = MaskSampler(n_masks=40, p=0.3, balanced=balanced)
    reference = sampler.all_masks(prompt, 11)
    if not balanced:
        assert torch.equal(reference, _plain_iid_masks(prompt, 11, 40, 0.3))
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CPU half of the check ran")
    on_cuda = sampler.all_masks(prompt.cuda(), 11).cpu()
    assert torch.equal(on_cuda, reference)


@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, 16, 1000])
def test_fast_refinement_equals_the_plain_one_mask_at_a_time_loop(balanced, shared, chunk_size):
    torch.manual_seed(0)
    model = build_backbone("tiny", num_classes=3, in_channels=2).eval()
    images = torch.randn(3, 2, 12, 12)
    prompts = _prompts(3, 12)
    seeds = [5, 5, 5] if shared else [5, 6, 7]
    targets = torch.tensor([0, 2, 1])
    refiner = PromptRefiner(
        n_masks=37, p=0.2, chunk_size=chunk_size, weight_fn=MonotoneWeight(), balanced=balanced
    )
    fast = refiner(model, images, prompts, seeds, targets)
    plain = _plain_refinement(refiner, model, images, prompts, seeds, targets)
    assert torch.allclose(fast, plain, atol=1e-5, rtol=0)


def test_cells_and_eq1_also_match_the_plain_loop():
    torch.manual_seed(1)
    images = torch.rand(2, 1, 10, 10)
    prompts = _prompts(2, 10)
    refiner = PromptRefiner(n_masks=40, p=0.25, cell_size=3, chunk_size=12, balanced=True)
    fast = refiner(_MeanModel(), images, prompts, [3, 3], torch.tensor([1, 0]))
    plain = _plain_refinement(refiner, _MeanModel(), images, prompts, [3, 3], [1, 0])
    assert torch.allclose(fast, plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("balanced", [False, True])
def test_aggregate_gradient_with_shared_draws_matches_stored_masks(balanced):
    sampler = MaskSampler(n_masks=45, p=0.3, balanced=balanced)
    prompts = _prompts(3, 9)
    seeds = [2, 9, 2]
    weights = torch.rand(3, 45, requires_grad=True)
    upstream = torch.randn(3, 9, 9)
    (aggregate(weights, prompts, seeds, sampler, chunk_size=10) * upstream).sum().backward()
    masks = torch.stack([sampler.all_masks(p, s) for p, s in zip(prompts, seeds)])
    reference = weights.detach().clone().requires_grad_(True)
    dense = torch.einsum("bn,bnhw->bhw", reference, masks) / sampler.normaliser
    (dense * upstream).sum().backward()
    assert torch.allclose(weights.grad, reference.grad, atol=1e-5)


# ----- what the model sees --------------------------------------------------------------------
class _Spy(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[dict] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(
            {
                "size": x.shape[0],
                "inputs": x.detach().clone(),
                "inference": torch.is_inference_mode_enabled(),
                "channels_last": x.is_contiguous(memory_format=torch.channels_last),
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
            }
        )
        return self.model(x)


def test_chunks_run_across_samples_in_inference_mode_and_channels_last():
    spy = _Spy(_MeanModel())
    probs = score_masks(
        spy, torch.rand(3, 2, 8, 8), _prompts(3, 8), [1, 2, 3], MaskSampler(10, 0.5), chunk_size=8
    )
    assert [c["size"] for c in spy.calls] == [8, 8, 8, 6]  # 30 (sample, mask) pairs, batched
    assert all(c["inference"] and c["channels_last"] for c in spy.calls)
    assert not probs.is_inference() and probs.shape == (3, 10, 2)
    nchw = _Spy(_MeanModel())
    again = PromptRefiner(10, 0.5, chunk_size=8, channels_last=False).score(
        nchw, torch.rand(3, 2, 8, 8), _prompts(3, 8), [1, 2, 3]
    )
    assert all(c["inputs"].is_contiguous() and not c["channels_last"] for c in nchw.calls)
    assert again.shape == probs.shape


def test_bf16_autocast_is_honoured_and_changes_nothing_else():
    torch.manual_seed(0)
    images, prompts = torch.randn(2, 1, 12, 12), _prompts(2, 12)
    runs = {}
    for autocast in (False, True):
        spy = _Spy(_MeanModel())
        refiner = PromptRefiner(n_masks=24, p=0.3, chunk_size=10, autocast=autocast)
        refined = refiner(spy, images, prompts, [4, 5], torch.tensor([1, 0]))
        runs[autocast] = (spy.calls, refined)
    plain_calls, plain = runs[False]
    auto_calls, auto = runs[True]
    assert all(c["autocast"] and c["autocast_dtype"] == torch.bfloat16 for c in auto_calls)
    assert not any(c["autocast"] for c in plain_calls)
    # Same chunks, same masked images, and for a model autocast leaves alone the same result.
    assert len(auto_calls) == len(plain_calls)
    for a, b in zip(auto_calls, plain_calls):
        assert torch.equal(a["inputs"], b["inputs"])
    assert torch.equal(auto, plain)


def test_bf16_autocast_on_a_real_backbone_keeps_float32_probabilities_close():
    torch.manual_seed(0)
    model = build_backbone("tiny", num_classes=2, in_channels=1).eval()
    images, prompts = torch.randn(2, 1, 16, 16), _prompts(2, 16)
    sampler = MaskSampler(32, 0.3)
    plain = score_masks(model, images, prompts, [1, 2], sampler, chunk_size=16)
    auto = score_masks(model, images, prompts, [1, 2], sampler, chunk_size=16, autocast=True)
    assert auto.dtype == torch.float32
    assert torch.allclose(auto, plain, atol=0.05) and not torch.equal(auto, plain)


# ----- reproducibility ------------------------------------------------------------------------
@pytest.mark.parametrize("balanced", [False, True])
def test_same_seed_gives_the_same_masks_whatever_the_chunk_size_or_order(balanced):
    sampler = MaskSampler(n_masks=70, p=0.2, cell_size=2, balanced=balanced)
    prompt = _prompts(1, 11)[0]
    whole = sampler.all_masks(prompt, seed=11)
    for chunk_size in (1, 5, 16, 33, 70):
        chunked = torch.cat([m for _, m in sampler.chunks(prompt, 11, chunk_size)])
        assert torch.equal(whole, chunked)
    stream = sampler.draws((11, 11), seed=11)
    late, early = stream.take(40, 52), stream.take(3, 9)  # out of order: replayed, not shifted
    assert torch.equal(torch.addcmul(*sampler.split_prompt(prompt), late), whole[40:52])
    assert torch.equal(torch.addcmul(*sampler.split_prompt(prompt), early), whole[3:9])
    assert not torch.equal(whole, sampler.all_masks(prompt, seed=12))


@pytest.mark.parametrize("shared", [False, True])
def test_a_samples_scores_do_not_depend_on_its_batch_or_the_chunk_size(shared):
    torch.manual_seed(0)
    model = build_backbone("tiny", num_classes=2, in_channels=1).eval()
    images, prompts = torch.randn(4, 1, 12, 12), _prompts(4, 12)
    seeds = [8] * 4 if shared else [8, 9, 10, 11]
    sampler = MaskSampler(40, 0.2, balanced=True)
    batch = score_masks(model, images, prompts, seeds, sampler, chunk_size=24)
    alone = score_masks(model, images[2:3], prompts[2:3], seeds[2:3], sampler, chunk_size=5)
    assert torch.allclose(batch[2], alone[0], atol=1e-6)


# ----- the balanced sampler -------------------------------------------------------------------
@given(
    n_masks=st.integers(1, 90),
    p=st.floats(0.01, 1.0),
    cell_size=st.integers(1, 3),
    seed=st.integers(0, 2**40),
    codes=st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=30, max_size=30),
)
@settings(max_examples=60, deadline=None)
def test_balanced_masks_switch_each_undecided_pixel_on_exactly_k_times(
    n_masks, p, cell_size, seed, codes
):
    prompt = torch.tensor(codes).view(5, 6)
    sampler = MaskSampler(n_masks, p, cell_size, balanced=True)
    masks = sampler.all_masks(prompt, seed)
    counts = masks.sum(dim=0)
    assert sampler.k == max(1, round(p * n_masks))
    assert bool((counts[prompt == UNDECIDED] == sampler.k).all())
    assert bool((masks[:, prompt == INDISPENSABLE] == 1).all())
    assert bool((masks[:, prompt == PRECLUDED] == 0).all())


def test_balanced_masks_are_not_the_same_subset_for_every_pixel():
    masks = MaskSampler(200, 0.1, balanced=True).all_masks(torch.full((6, 6), UNDECIDED), 0)
    patterns = {tuple(masks[:, y, x].tolist()) for y in range(6) for x in range(6)}
    assert len(patterns) == 36
    assert masks[:100].sum().item() == pytest.approx(36 * 10, rel=0.2)  # spread over the N masks


def test_balanced_eq1_with_a_constant_model_is_exact_and_divides_by_k():
    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, 1.0]]).expand(x.shape[0], 2)

    prompts = _prompts(2, 10)
    sampler = MaskSampler(n_masks=50, p=0.13, balanced=True)  # k = round(6.5) = 6, not N p
    weights = torch.full((2, 50), 0.25)
    attention = aggregate(weights, prompts, [1, 2], sampler)
    assert torch.allclose(attention[prompts == UNDECIDED], torch.tensor(0.25))
    assert torch.allclose(attention[prompts == INDISPENSABLE], torch.tensor(0.25 * 50 / 6))
    refined = PromptRefiner(n_masks=50, p=0.13, balanced=True)(
        Constant(), torch.rand(2, 1, 10, 10), prompts, [1, 2], torch.tensor([1, 1])
    )
    assert torch.allclose(refined[prompts == UNDECIDED], torch.tensor(6 / 50))


# ----- the options in VAPL --------------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True])
def test_vapl_options_reach_the_refiner_and_a_samples_prompt_ignores_its_batch(shared):
    from datamodules.synthetic import make_synthetic_split
    from vapl.methods import VAPL

    data = make_synthetic_split(6, image_size=16, seed=3)
    batch = torch.utils.data.default_collate([data[i] for i in range(6)])
    torch.manual_seed(0)
    model = VAPL(
        in_channels=1,
        backbone="tiny",
        n_masks=24,
        chunk_size=10,
        balanced_masks=True,
        shared_masks=shared,
    ).eval()
    assert model.refiner.sampler.balanced and not model.refiner.autocast
    assert VAPL(in_channels=1, backbone="tiny", autocast=True).refiner.autocast
    seeds = model._seeds(batch["id"], epoch=0)
    assert (len(set(seeds)) == 1) == shared
    whole = model.refined_prompts(batch)
    part = {k: v[3:5] for k, v in batch.items()}
    assert torch.allclose(model.refined_prompts(part), whole[3:5], atol=1e-6)
