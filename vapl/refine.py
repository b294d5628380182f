"""Prompt refinement by perturbed masks (eq. 1 and 3) and the monotone weight function g (eq. 2).

Plain torch, no Lightning import. The pieces:

* :class:`MaskSampler` draws the binary masks ``M_i`` of a prompt ``D`` (indispensable -> 1,
  precluded -> 0, undecided -> 1 with probability ``p``), block by block from a generator seeded
  by (seed, epoch, sample), so the same masks can be drawn again without ever holding all N.
* :func:`score_masks` runs the prompted model on ``I * M_i`` without autograd, in chunks.
* :func:`aggregate` computes ``sum_i w_i M_i`` chunk by chunk, with a backward pass that draws
  the masks again instead of storing them: memory does not grow with N.
* :class:`MonotoneWeight` is g: positive weights, no biases, sigma(0) = 0.
* :class:`PromptRefiner` puts them together and scales the result (see :func:`normalise_attention`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vapl.prompts import INDISPENSABLE, UNDECIDED

#: Masks are drawn in blocks of this many, each block from its own seeded generator, so the masks
#: of a sample do not depend on the chunk size used to score them.
MASK_BLOCK = 16


def sample_seed(seed: int, epoch: int, sample_id: str) -> int:
    """A stable 63-bit seed for one sample's masks in one epoch (stable across processes)."""
    digest = zlib.crc32(f"{seed}:{epoch}:{sample_id}".encode())
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + digest) % (2**63 - 1)


class MaskSampler:
    """Draws the N perturbed masks of a prompt, eq. 3's ``M_i``.

    ``cell_size`` k > 1 switches undecided cells of k by k pixels together instead of single
    pixels (k = 1 is the paper).
    """

    def __init__(self, n_masks: int, p: float, cell_size: int = 1) -> None:
        if n_masks < 1:
            raise ValueError(f"n_masks must be at least 1, got {n_masks}")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {p}")
        if cell_size < 1:
            raise ValueError(f"cell_size must be at least 1, got {cell_size}")
        self.n_masks = n_masks
        self.p = p
        self.cell_size = cell_size

    def block(self, prompt: torch.Tensor, seed: int, index: int) -> torch.Tensor:
        """Masks ``index * MASK_BLOCK`` up to the next block (or N), float [b, H, W] on the prompt's device."""
        start = index * MASK_BLOCK
        count = min(MASK_BLOCK, self.n_masks - start)
        height, width = prompt.shape
        k = self.cell_size
        cells = (-(-height // k), -(-width // k))
        generator = torch.Generator(device=prompt.device)
        generator.manual_seed((seed + 104_729 * index) % (2**63 - 1))
        draw = torch.rand((count, *cells), generator=generator, device=prompt.device) < self.p
        if k > 1:
            draw = draw.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2)
            draw = draw[:, :height, :width]
        on = (prompt == INDISPENSABLE) | ((prompt == UNDECIDED) & draw)
        return on.to(torch.float32)

    def chunks(
        self, prompt: torch.Tensor, seed: int, chunk_size: int
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield ``(slice of mask indices, masks [c, H, W])`` covering all N masks in order."""
        blocks_per_chunk = max(1, chunk_size // MASK_BLOCK)
        n_blocks = -(-self.n_masks // MASK_BLOCK)
        for first in range(0, n_blocks, blocks_per_chunk):
            parts = [
                self.block(prompt, seed, b)
                for b in range(first, min(first + blocks_per_chunk, n_blocks))
            ]
            masks = torch.cat(parts) if len(parts) > 1 else parts[0]
            start = first * MASK_BLOCK
            yield slice(start, start + masks.shape[0]), masks

    def all_masks(self, prompt: torch.Tensor, seed: int) -> torch.Tensor:
        """All N masks at once [N, H, W]: for tests and small N only."""
        return torch.cat([m for _, m in self.chunks(prompt, seed, self.n_masks)])


@torch.no_grad()
def score_masks(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    prompts: torch.Tensor,
    seeds: Sequence[int],
    sampler: MaskSampler,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Class probabilities of the model on every masked image: ``softmax f_m(I * M_i)``, [B, N, K].

    No autograd; the model is called on at most ``chunk_size`` masked images at a time. The model
    should be in eval mode (the caller's job: scoring must not update batch-norm statistics).
    """
    rows = []
    for image, prompt, seed in zip(images, prompts, seeds):
        parts = []
        for _, masks in sampler.chunks(prompt, seed, chunk_size):
            logits = model(image.unsqueeze(0) * masks.unsqueeze(1).to(image.dtype))
            parts.append(torch.softmax(logits.float(), dim=-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


class _ChunkedAggregate(torch.autograd.Function):
    """``A_b = sum_i w_bi M_bi`` with masks drawn again in backward instead of stored."""

    @staticmethod
    def forward(ctx, weights, prompts, seeds, sampler, chunk_size):  # type: ignore[override]
        out = torch.zeros(prompts.shape, dtype=weights.dtype, device=weights.device)
        for b, (prompt, seed) in enumerate(zip(prompts, seeds)):
            for index, masks in sampler.chunks(prompt, seed, chunk_size):
                out[b] += torch.einsum("n,nhw->hw", weights[b, index], masks.to(weights.dtype))
        ctx.save_for_backward(prompts)
        ctx.seeds, ctx.sampler, ctx.chunk_size = seeds, sampler, chunk_size
        ctx.weights_dtype = weights.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (prompts,) = ctx.saved_tensors
        grad_weights = torch.zeros(
            (prompts.shape[0], ctx.sampler.n_masks), dtype=grad_out.dtype, device=grad_out.device
        )
        for b, (prompt, seed) in enumerate(zip(prompts, ctx.seeds)):
            for index, masks in ctx.sampler.chunks(prompt, seed, ctx.chunk_size):
                grad_weights[b, index] = torch.einsum(
                    "hw,nhw->n", grad_out[b], masks.to(grad_out.dtype)
                )
        return grad_weights, None, None, None, None


def aggregate(
    weights: torch.Tensor,
    prompts: torch.Tensor,
    seeds: Sequence[int],
    sampler: MaskSampler,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Eq. 3: ``A = 1 / (N p) * sum_i w_i M_i`` for weights [B, N] and prompts [B, H, W].

    Differentiable in ``weights`` with memory that does not depend on N.
    """
    total = _ChunkedAggregate.apply(weights, prompts, tuple(seeds), sampler, chunk_size)
    return total / (sampler.n_masks * sampler.p)


def normalise_attention(attention: torch.Tensor) -> torch.Tensor:
    """Scale a refined prompt to [0, 1] by its per-sample maximum (our choice, see docs/method.md).

    Every indispensable pixel is on in every mask, so it holds the maximum of eq. 3 and becomes 1;
    precluded pixels stay 0; an undecided pixel becomes the share of the total weight carried by
    the masks that keep it.
    """
    peak = attention.flatten(1).amax(dim=1).clamp_min(1e-12)
    return attention / peak.view(-1, *([1] * (attention.ndim - 1)))


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
    """Turns prompts into refined prompts ``A`` in [0, 1] (eq. 3, or eq. 1 with ``weight_fn=None``).

    Holds g (when learned) and the mask sampler; the prompted model is passed in at each call.
    """

    def __init__(
        self,
        n_masks: int = 5000,
        p: float = 0.1,
        cell_size: int = 1,
        chunk_size: int = 64,
        weight_fn: MonotoneWeight | None = None,
    ) -> None:
        super().__init__()
        self.sampler = MaskSampler(n_masks, p, cell_size)
        self.chunk_size = chunk_size
        self.weight_fn = weight_fn

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
        return score_masks(model, images, prompts, seeds, self.sampler, self.chunk_size)

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
        """Refined prompts [B, H, W] in [0, 1] from target-class scores [B, N]."""
        attention = aggregate(self.weights(scores), prompts, seeds, self.sampler, self.chunk_size)
        return normalise_attention(attention)

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
