"""How many masked images the refinement engine scores per forward pass (plain torch).

``chunk_size=None`` (the default of :class:`~vapl.core.refine.PromptRefiner` and VAPL) chooses it
from the image size and the device: the chunk holds about ``pixel_budget`` pixels,

* on the CPU ``2**18`` pixels: 256 images of 32 x 32, 113 of 48 x 48, 64 of 64 x 64, 16 of
  128 x 128, 8 (the least) of 224 x 224. Measured with one thread (docs/performance.md, figure
  10): for ResNet-18 within 5 % of the fastest fixed chunk at 32, 48, 64, 128 and 224 px, where a
  fixed 64 was 11 to 31 % slower at 32 and 48 px; the tiny CNN's cost per image is flat from 32
  to 113 images at 48 px and it prefers half the budget at 32 and 64 px (up to 40 % slower at
  64 px: pass ``chunk_size``).
  Larger chunks fall out of the cache, smaller ones pay the per-call overhead;
* on a GPU ``2**23`` pixels (8192 images of 32 x 32, 167 of 224 x 224), capped so that the chunk's
  estimated activations (``GPU_BYTES_PER_PIXEL`` per input pixel) take at most half of the free
  device memory. Not measured here (no GPU was lent to this project's benchmarks);

never fewer than ``MIN_CHUNK`` nor more than ``MAX_CHUNK`` images, nor more than there are
(sample, mask) pairs. The same size bounds the draws of the aggregation's matrix products. A
sample's masks and scores do not depend on the chunk (the masks are drawn per seed and block), so
results agree with any fixed chunk to float tolerance; an explicit ``chunk_size`` overrides.
"""

from __future__ import annotations

import torch

CPU_PIXEL_BUDGET = 2**18
GPU_PIXEL_BUDGET = 2**23
GPU_BYTES_PER_PIXEL = 2048  # a generous estimate of a CNN's inference activations per pixel
MIN_CHUNK = 8
MAX_CHUNK = 8192


def auto_chunk_size(
    height: int, width: int, device: torch.device | str = "cpu", pairs: int | None = None
) -> int:
    """Masked images per forward pass for ``height x width`` images on ``device`` (module
    docstring); at most ``pairs`` when given."""
    device = torch.device(device)
    pixels = max(1, int(height) * int(width))
    budget = CPU_PIXEL_BUDGET
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = min(GPU_PIXEL_BUDGET, free // (2 * GPU_BYTES_PER_PIXEL))
    chunk = min(MAX_CHUNK, max(MIN_CHUNK, budget // pixels))
    return max(1, min(chunk, pairs)) if pairs is not None else chunk
