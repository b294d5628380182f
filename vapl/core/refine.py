"""Prompt refinement by perturbed masks (eq. 1 and 3) and the monotone weight function g (eq. 2).

Plain torch, no Lightning import. The pieces:

* :class:`~vapl.core.masks.MaskSampler` (in :mod:`vapl.core.masks`) draws the binary masks ``M_i`` of a
  prompt ``D`` from a seed, block by block, so the same masks can be drawn again without ever
  holding all N. A mask is ``1[D = indispensable] + 1[D = undecided] * R_i`` with ``R_i`` a draw
  that does not depend on the prompt: samples given the same seed share their draws.
* :func:`score_masks` runs the prompted model on ``I * M_i`` in inference mode, chunks of
  (sample, mask) pairs taken across the whole batch, channels-last, optionally under bf16
  autocast.
* :func:`aggregate` computes ``sum_i w_i M_i`` as one matrix product with the draws per chunk,
  with a backward pass that draws the masks again instead of storing them: memory does not grow
  with N.
* :class:`MonotoneWeight` is g: positive weights, no biases, sigma(0) = 0.
* :func:`normalise_attention` scales the result: ``paper`` leaves eq. 3 as it is, ``total_weight``
  divides by what an always-on pixel gets, ``max`` by the per-sample maximum.
* :class:`PromptRefiner` puts them together.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vapl.core.masks import MASK_BLOCK, MaskSampler

__all__ = [
    "MASK_BLOCK",
    "MaskSampler",
    "MonotoneWeight",
    "PromptRefiner",
    "aggregate",
    "NORMALIZATIONS",
    "expected_attention",
    "normalise_attention",
    "sample_seed",
    "score_masks",
]


#: How eq. 3's ``A`` is scaled before it multiplies the image (docs/method.md):
#: ``paper``: as eq. 3 gives it, ``1 / (N p) sum_i g(s_i) M_i`` (g's scale matters);
#: ``total_weight``: divided by ``sum_i g(s_i) / (N p)``, the value of a pixel on in every mask
#: (scale-free, continuous in the prompt); ``max``: divided by the per-sample maximum (ours before;
#: scale-free, but it jumps when a prompt has no indispensable pixel).
NORMALIZATIONS = ("paper", "total_weight", "max")


def sample_seed(seed: int, epoch: int, sample_id: str) -> int:
    """A stable 63-bit seed for one sample's masks in one epoch (stable across processes)."""
    digest = zlib.crc32(f"{seed}:{epoch}:{sample_id}".encode())
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + digest) % (2**63 - 1)


def seed_groups(seeds: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``(seed, rows)`` for each distinct seed, in order of first appearance: the rows that share
    their masks' draws."""
    rows: dict[int, list[int]] = {}
    for row, seed in enumerate(seeds):
        rows.setdefault(int(seed), []).append(row)
    return list(rows.items())


def _pieces(
    group_sizes: Sequence[int], n_masks: int, chunk_size: int
) -> Iterator[list[tuple[int, int, int, int, int]]]:
    """Chunks of at most ``chunk_size`` (sample, mask) pairs over the whole batch.

    The pairs of a group are ordered mask-major (mask 0 of each of its samples, then mask 1, ...),
    groups one after the other. Each chunk is a list of ``(group, first mask, end mask, first row,
    end row)`` rectangles of whole masks by a range of the group's rows.
    """
    chunk: list[tuple[int, int, int, int, int]] = []
    room = chunk_size
    for group, size in enumerate(group_sizes):
        pair, total = 0, size * n_masks
        while pair < total:
            mask, row = divmod(pair, size)
            if row == 0 and room >= size:  # whole masks: as many as fit
                masks = min(room // size, n_masks - mask)
                piece = (group, mask, mask + masks, 0, size)
                taken = masks * size
            else:  # part of one mask's rows, to finish it or to fill the chunk
                taken = min(size - row, room)
                piece = (group, mask, mask + 1, row, row + taken)
            chunk.append(piece)
            pair += taken
            room -= taken
            if room == 0:
                yield chunk
                chunk, room = [], chunk_size
    if chunk:
        yield chunk


def _inputs(images: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``I * 1[D = indispensable]`` and ``I * 1[D = undecided]`` [B, C, H, W]: a masked image is
    ``first + second * R_i``, bit for bit ``I * M_i``."""
    indispensable, undecided = MaskSampler.split_prompt(prompts)
    return (
        images * indispensable.to(images.dtype)[:, None],
        images * undecided.to(images.dtype)[:, None],
    )


def score_masks(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    prompts: torch.Tensor,
    seeds: Sequence[int],
    sampler: MaskSampler,
    chunk_size: int = 64,
    autocast: bool = False,
    channels_last: bool = True,
) -> torch.Tensor:
    """Class probabilities of the model on every masked image: ``softmax f_m(I * M_i)``, [B, N, K].

    Inference mode; the model is called on at most ``chunk_size`` masked images at a time, taken
    as (sample, mask) pairs across the batch and written in place into one buffer, channels-last
    unless ``channels_last=False``. Samples with equal seeds share their draws, generated once.
    ``autocast=True`` runs the model under bf16 autocast on the images' device (the probabilities
    stay float32). The model should be in eval mode (the caller's job: scoring must not update
    batch-norm statistics).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    n_masks, device = sampler.n_masks, images.device
    groups = seed_groups(seeds)
    if len(groups) == 0:
        raise ValueError("score_masks needs at least one sample")
    shape = (prompts.shape[-2], prompts.shape[-1])
    layout = torch.channels_last if channels_last and images.ndim == 4 else torch.contiguous_format
    with torch.inference_mode():
        fixed, varying = _inputs(images, prompts)
        per_group = [
            (
                torch.tensor(rows, device=device),
                fixed[rows].contiguous(memory_format=layout),  # the buffer's layout: a plain
                varying[rows].contiguous(memory_format=layout),  # elementwise write
                sampler.draws(shape, seed, device),
            )
            for seed, rows in groups
        ]
        buffer = torch.empty(
            (min(chunk_size, len(images) * n_masks), *images.shape[1:]),
            dtype=images.dtype,
            device=device,
            memory_format=layout,
        )
        probs: torch.Tensor | None = None
        for chunk in _pieces([len(rows) for _, rows in groups], n_masks, chunk_size):
            filled, where_rows, where_masks = 0, [], []
            for group, first, end, row0, row1 in chunk:
                rows, fixed_g, varying_g, stream = per_group[group]
                count = (end - first) * (row1 - row0)
                target = buffer[filled : filled + count].view(
                    end - first, row1 - row0, *images.shape[1:]
                )
                draw = stream.take(first, end).to(images.dtype)
                draw = draw.reshape(end - first, 1, *([1] * (images.ndim - 3)), *shape)
                torch.addcmul(
                    fixed_g[None, row0:row1], varying_g[None, row0:row1], draw, out=target
                )
                where_rows.append(rows[row0:row1].repeat(end - first))
                where_masks.append(
                    torch.arange(first, end, device=device).repeat_interleave(row1 - row0)
                )
                filled += count
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(buffer[:filled])
            chunk_probs = torch.softmax(logits.float(), dim=-1)
            if probs is None:
                probs = torch.empty((len(images), n_masks, chunk_probs.shape[-1]), device=device)
            probs[torch.cat(where_rows), torch.cat(where_masks)] = chunk_probs
    assert probs is not None
    return probs.clone()  # a normal tensor: inference tensors cannot be saved for backward


class _ChunkedAggregate(torch.autograd.Function):
    """``A_b = sum_i w_bi M_bi`` with the draws generated again in backward instead of stored.

    With ``M_bi = U_b + V_b * R_i`` (``U``, ``V`` the indispensable and undecided indicators):
    ``A_b = U_b * sum_i w_bi + V_b * (w_b @ R)``, one matrix product per chunk of draws for all
    the samples that share them.
    """

    @staticmethod
    def forward(ctx, weights, prompts, seeds, sampler, chunk_size):  # type: ignore[override]
        fixed, varying = (m.to(weights.dtype) for m in MaskSampler.split_prompt(prompts))
        height, width = prompts.shape[-2:]
        out = fixed * weights.sum(dim=1).view(-1, 1, 1)
        for seed, rows in seed_groups(seeds):
            index = torch.tensor(rows, device=weights.device)
            stream = sampler.draws((height, width), seed, weights.device)
            total = torch.zeros((len(rows), height * width), dtype=weights.dtype, device=out.device)
            group_weights = weights[index]
            for start, stop in _mask_ranges(sampler.n_masks, chunk_size):
                draw = stream.take(start, stop).to(weights.dtype).reshape(stop - start, -1)
                total.addmm_(group_weights[:, start:stop], draw)
            out[index] += varying[index] * total.view(-1, height, width)
        ctx.save_for_backward(prompts)
        ctx.seeds, ctx.sampler, ctx.chunk_size = seeds, sampler, chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (prompts,) = ctx.saved_tensors
        sampler = ctx.sampler
        fixed, varying = (m.to(grad_out.dtype) for m in MaskSampler.split_prompt(prompts))
        height, width = prompts.shape[-2:]
        grad_fixed = (grad_out * fixed).sum(dim=(1, 2))
        grad_varying = (grad_out * varying).view(len(prompts), -1)
        grad_weights = grad_fixed[:, None].repeat(1, sampler.n_masks)
        for seed, rows in seed_groups(ctx.seeds):
            index = torch.tensor(rows, device=grad_out.device)
            stream = sampler.draws((height, width), seed, grad_out.device)
            group_grad = grad_varying[index]
            part = torch.empty(
                (len(rows), sampler.n_masks), dtype=grad_out.dtype, device=grad_out.device
            )
            for start, stop in _mask_ranges(sampler.n_masks, ctx.chunk_size):
                draw = stream.take(start, stop).to(grad_out.dtype).reshape(stop - start, -1)
                part[:, start:stop] = group_grad @ draw.t()
            grad_weights[index] += part
        return grad_weights, None, None, None, None


def _mask_ranges(n_masks: int, chunk_size: int) -> Iterator[tuple[int, int]]:
    step = max(1, chunk_size)
    for start in range(0, n_masks, step):
        yield start, min(start + step, n_masks)


def aggregate(
    weights: torch.Tensor,
    prompts: torch.Tensor,
    seeds: Sequence[int],
    sampler: MaskSampler,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Eq. 3: ``A = 1 / (N p) * sum_i w_i M_i`` for weights [B, N] and prompts [B, H, W].

    Balanced masks divide by their exact count ``k`` instead of ``N p``. Differentiable in
    ``weights`` with memory that does not depend on N.
    """
    total = _ChunkedAggregate.apply(
        weights, prompts, tuple(int(s) for s in seeds), sampler, chunk_size
    )
    return total / sampler.normaliser


def normalise_attention(
    attention: torch.Tensor,
    weights: torch.Tensor,
    normaliser: float,
    mode: str = "total_weight",
) -> torch.Tensor:
    """Scale eq. 3's ``A`` [B, H, W] (already divided by ``normaliser``, i.e. ``N p``) by ``mode``.

    * ``paper``: unchanged. An indispensable pixel gets ``sum_i g(s_i) / (N p)`` (about
      ``mean g / p``), an unimportant undecided pixel about ``mean g``: the scale of g, which
      ``L_Agg`` anchors, is the scale of the image f_m sees.
    * ``total_weight``: divided by ``sum_i g(s_i) / (N p)`` (``weights`` [B, N]), the value of a
      pixel that is on in every mask. Indispensable pixels are exactly 1, precluded 0, an
      undecided pixel the share of the total weight carried by the masks that keep it (about
      ``p`` when it does not matter), whether or not the prompt has an indispensable pixel.
    * ``max``: divided by the per-sample maximum. The same as ``total_weight`` when the prompt
      has an indispensable pixel; without one the largest undecided pixel becomes 1 and the
      others follow (around 0.8 on average instead of about ``p``).
    """
    if mode == "paper":
        return attention
    shape = (-1, *([1] * (attention.ndim - 1)))
    if mode == "total_weight":
        always_on = (weights.sum(dim=1) / normaliser).clamp_min(1e-12)
        return attention / always_on.view(shape)
    if mode == "max":
        peak = attention.flatten(1).amax(dim=1).clamp_min(1e-12)
        return attention / peak.view(shape)
    raise ValueError(f"unknown normalization {mode!r}; choose one of {NORMALIZATIONS}")


def expected_attention(
    prompts: torch.Tensor, sampler: MaskSampler, mode: str = "total_weight"
) -> torch.Tensor:
    """Eq. 3 with equal weights ``g(s_i) = 1`` and each mask replaced by its expectation, scaled by
    ``mode``: what the refinement gives when the scores carry no information, without mask noise.

    An undecided pixel is on in ``N p`` masks on average (exactly ``k`` for balanced masks, what eq. 3
    divides by), so ``A = 1[D = indispensable] N / (N p) + 1[D = undecided]``, then scaled as
    :func:`normalise_attention` does (``total_weight``: indispensable 1, undecided ``p``).
    """
    indispensable, undecided = MaskSampler.split_prompt(prompts)
    n_masks, normaliser = sampler.n_masks, sampler.normaliser
    attention = indispensable * (n_masks / normaliser) + undecided
    weights = torch.ones((len(prompts), n_masks), dtype=attention.dtype, device=attention.device)
    return normalise_attention(attention, weights, normaliser, mode)


class MonotoneWeight(nn.Module):
    """Eq. 2's g: a monotone MLP from a score in [0, 1] to a non-negative weight.

    Weights are ``phi(W)`` with ``phi = exp`` (or ``tanh + 1``), so positive; no biases; the
    activation is tanh, with tanh(0) = 0. Hence g(0) = 0 and g is non-decreasing for any W.
    """

    def __init__(self, hidden: int = 16, depth: int = 2, positivity: str = "exp") -> None:
        super().__init__()
        if positivity not in ("exp", "tanh"):
            raise ValueError(f"positivity is 'exp' or 'tanh', got {positivity!r}")
        sizes = [1] + [hidden] * depth + [1]
        self.raw_weights = nn.ParameterList(
            nn.Parameter(
                torch.randn(fan_out, fan_in) * 0.1 - torch.log(torch.tensor(float(fan_in)))
            )
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:])
        )
        self.positivity = positivity

    def _positive(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(raw) if self.positivity == "exp" else torch.tanh(raw) + 1.0

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        x = scores.unsqueeze(-1)
        last = len(self.raw_weights) - 1
        for i, raw in enumerate(self.raw_weights):
            x = F.linear(x, self._positive(raw))
            if i < last:
                x = torch.tanh(x)
        return x.squeeze(-1)

    def aggregation_loss(self) -> torch.Tensor:
        """``L_Agg = (g(1) - 1)^2``: keeps g's scale at one."""
        one = torch.ones(1, device=self.raw_weights[0].device)
        return (self.forward(one)[0] - 1.0) ** 2


class PromptRefiner(nn.Module):
    """Turns prompts into refined prompts ``A`` (eq. 3, or eq. 1 with ``weight_fn=None``), scaled by
    ``normalization`` (:func:`normalise_attention`; in [0, 1] unless ``paper``).

    Holds g (when learned) and the mask sampler; the prompted model is passed in at each call.
    ``balanced=True`` draws balanced masks (see :mod:`vapl.core.masks`); ``autocast=True`` scores under
    bf16 autocast (GPUs, and CPUs with AMX; the refined prompt is still float32);
    ``channels_last=False`` scores NCHW images (faster for some models, see docs/performance.md).
    """

    def __init__(
        self,
        n_masks: int = 5000,
        p: float = 0.1,
        cell_size: int = 1,
        chunk_size: int = 64,
        weight_fn: MonotoneWeight | None = None,
        balanced: bool = False,
        autocast: bool = False,
        channels_last: bool = True,
        normalization: str = "total_weight",
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}"
            )
        self.sampler = MaskSampler(n_masks, p, cell_size, balanced)
        self.normalization = normalization
        self.chunk_size = chunk_size
        self.weight_fn = weight_fn
        self.autocast = autocast
        self.channels_last = channels_last

    def weights(self, scores: torch.Tensor) -> torch.Tensor:
        """g(s) for scores [B, N] (identity without a learned g: eq. 1)."""
        return scores if self.weight_fn is None else self.weight_fn(scores)

    def score(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        prompts: torch.Tensor,
        seeds: Sequence[int],
    ) -> torch.Tensor:
        """Probabilities [B, N, K] of ``model`` on the masked images (no autograd)."""
        return score_masks(
            model,
            images,
            prompts,
            seeds,
            self.sampler,
            self.chunk_size,
            self.autocast,
            self.channels_last,
        )

    @staticmethod
    def target_scores(probs: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Scores [B, N] of the target class: the given one, or, with ``targets=None``, the class
        with the highest mean probability over the masks. The label is never needed at evaluation.
        """
        if targets is None:
            targets = probs.mean(dim=1).argmax(dim=-1)
        index = targets.view(-1, 1, 1).expand(-1, probs.shape[1], 1)
        return probs.gather(2, index).squeeze(-1)

    def refine_from_scores(
        self, scores: torch.Tensor, prompts: torch.Tensor, seeds: Sequence[int]
    ) -> torch.Tensor:
        """Refined prompts [B, H, W] from target-class scores [B, N] (eq. 3, then scaled)."""
        weights = self.weights(scores)
        attention = aggregate(weights, prompts, seeds, self.sampler, self.chunk_size)
        return normalise_attention(attention, weights, self.sampler.normaliser, self.normalization)

    def forward(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        images: torch.Tensor,
        prompts: torch.Tensor,
        seeds: Sequence[int],
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        probs = self.score(model, images, prompts, seeds)
        scores = self.target_scores(probs, targets)
        return self.refine_from_scores(scores, prompts, seeds)
