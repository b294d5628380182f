"""The perturbed masks ``M_i`` of eq. 1 and 3, drawn block by block from seeded generators.

A mask is the prompt ``D`` with its undecided pixels switched on or off:
``M_i = 1[D = indispensable] + 1[D = undecided] * R_i``, where ``R_i`` is the *draw*, a binary
field of the image's size that does not depend on the prompt. Everything fast in
:mod:`vapl.refine` rests on that split: a draw is generated once per seed and serves every sample
that uses the seed, and ``sum_i w_i M_i`` becomes one matrix product with the draws.

Draws come in blocks of :data:`MASK_BLOCK` masks, block ``b`` of seed ``s`` from a generator
seeded by ``(s, b)``, so a sample's masks depend on its seed only, never on the chunk size, the
batch or the order in which they are asked for.

Two samplers:

* i.i.d. (the paper): each undecided pixel is on with probability ``p`` in each mask;
* balanced: each undecided pixel is on in exactly ``k = round(p N)`` of the N masks, a uniformly
  random k-subset per pixel, drawn sequentially (mask ``i`` switches a pixel on with probability
  ``(k - on so far) / (N - i)``), which removes the noise of the count in eq. 1's denominator.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vapl.prompts import INDISPENSABLE, UNDECIDED

#: Masks are drawn in blocks of this many, each block from its own seeded generator, so the masks
#: of a sample do not depend on the chunk size used to score them.
MASK_BLOCK = 16


def block_seed(seed: int, index: int) -> int:
    """The generator seed of block ``index`` of the masks drawn with ``seed``."""
    return (int(seed) + 104_729 * index) % (2**63 - 1)


class MaskSampler:
    """Draws the N perturbed masks of a prompt, eq. 3's ``M_i``.

    ``cell_size`` c > 1 switches undecided cells of c by c pixels together instead of single
    pixels (c = 1 is the paper). ``balanced=True`` switches each undecided cell on in exactly
    :attr:`k` of the N masks instead of independently with probability ``p``.
    """

    def __init__(self, n_masks: int, p: float, cell_size: int = 1, balanced: bool = False) -> None:
        if n_masks < 1:
            raise ValueError(f"n_masks must be at least 1, got {n_masks}")
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {p}")
        if cell_size < 1:
            raise ValueError(f"cell_size must be at least 1, got {cell_size}")
        self.n_masks = n_masks
        self.p = p
        self.cell_size = cell_size
        self.balanced = balanced

    @property
    def k(self) -> int:
        """Balanced sampler: the number of masks each undecided pixel is on in, ``round(p N)``
        (at least 1)."""
        return max(1, round(self.p * self.n_masks))

    @property
    def normaliser(self) -> float:
        """Eq. 3's denominator: ``N p`` for i.i.d. masks, the exact count ``k`` for balanced ones
        (dividing by ``N p`` there would bias ``A`` by the rounding of ``k``)."""
        return float(self.k) if self.balanced else self.n_masks * self.p

    def draws(
        self, shape: tuple[int, int], seed: int, device: torch.device | str = "cpu"
    ) -> DrawStream:
        """The draws ``R_i`` of ``seed`` for images of ``shape`` (H, W)."""
        return DrawStream(self, shape, seed, torch.device(device))

    @staticmethod
    def split_prompt(prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1[D = indispensable], 1[D = undecided])`` as float tensors of the prompt's shape."""
        indispensable = (prompt == INDISPENSABLE).to(torch.float32)
        undecided = (prompt == UNDECIDED).to(torch.float32)
        return indispensable, undecided

    def masks(self, prompt: torch.Tensor, seed: int, start: int, stop: int) -> torch.Tensor:
        """Masks ``start`` to ``stop`` of a prompt [H, W]: float [stop - start, H, W] in {0, 1}."""
        indispensable, undecided = self.split_prompt(prompt)
        draw = self.draws(tuple(prompt.shape), seed, prompt.device).take(start, stop)
        return torch.addcmul(indispensable, undecided, draw)

    def block(self, prompt: torch.Tensor, seed: int, index: int) -> torch.Tensor:
        """The masks of block ``index``, float [b, H, W] on the prompt's device."""
        start = index * MASK_BLOCK
        return self.masks(prompt, seed, start, min(start + MASK_BLOCK, self.n_masks))

    def chunks(
        self, prompt: torch.Tensor, seed: int, chunk_size: int
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Yield ``(slice of mask indices, masks [c, H, W])`` covering all N masks in order."""
        indispensable, undecided = self.split_prompt(prompt)
        stream = self.draws(tuple(prompt.shape), seed, prompt.device)
        for start in range(0, self.n_masks, max(1, chunk_size)):
            stop = min(start + max(1, chunk_size), self.n_masks)
            yield (
                slice(start, stop),
                torch.addcmul(indispensable, undecided, stream.take(start, stop)),
            )

    def all_masks(self, prompt: torch.Tensor, seed: int) -> torch.Tensor:
        """All N masks at once [N, H, W]: for tests and small N only."""
        return self.masks(prompt, seed, 0, self.n_masks)


class DrawStream:
    """The draws ``R_i`` of one seed, served in ranges of mask indices.

    Blocks are generated on demand and the last ones asked for are kept, so consecutive ranges
    that share a block do not generate it twice. The balanced sampler's blocks depend on the ones
    before (the count of masks each pixel is still owed), so they are generated in order: asking
    for an earlier block than the last one starts again from block 0.
    """

    def __init__(
        self, sampler: MaskSampler, shape: tuple[int, int], seed: int, device: torch.device
    ) -> None:
        self.sampler = sampler
        self.shape = (int(shape[0]), int(shape[1]))
        self.seed = int(seed)
        self.device = device
        c = sampler.cell_size
        self.cells = (-(-self.shape[0] // c), -(-self.shape[1] // c))
        self._kept: dict[int, torch.Tensor] = {}
        self._restart()

    def _restart(self) -> None:
        self._next_block = 0
        if self.sampler.balanced:  # how many of the remaining masks each cell must still be on in
            self._owed = torch.full(
                self.cells, self.sampler.k, dtype=torch.int64, device=self.device
            )

    def _generate(self, index: int) -> torch.Tensor:
        """Block ``index``'s cell draws, float [count, *cells] in {0, 1}."""
        sampler = self.sampler
        start = index * MASK_BLOCK
        count = min(MASK_BLOCK, sampler.n_masks - start)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(block_seed(self.seed, index))
        if not sampler.balanced:
            draw = torch.rand((count, *self.cells), generator=generator, device=self.device)
            return draw.lt_(sampler.p)
        draw = torch.empty((count, *self.cells), dtype=torch.float32, device=self.device)
        for j in range(count):
            remaining = sampler.n_masks - (start + j)
            ticket = torch.randint(
                0, remaining, self.cells, generator=generator, device=self.device
            )
            on = ticket < self._owed  # probability owed / remaining: exactly k over all N
            self._owed -= on.long()
            draw[j] = on
        return draw

    def _block(self, index: int) -> torch.Tensor:
        if index in self._kept:
            return self._kept[index]
        if not self.sampler.balanced:
            return self._generate(index)
        if index < self._next_block:
            self._restart()
        while self._next_block < index:
            self._generate(self._next_block)
            self._next_block += 1
        self._next_block += 1
        return self._generate(index)

    def take(self, start: int, stop: int) -> torch.Tensor:
        """Draws of masks ``start`` to ``stop``: float [stop - start, H, W] in {0, 1}."""
        if not 0 <= start < stop <= self.sampler.n_masks:
            raise ValueError(f"mask range {start}:{stop} outside 0:{self.sampler.n_masks}")
        first, last = start // MASK_BLOCK, (stop - 1) // MASK_BLOCK
        blocks = {b: self._block(b) for b in range(first, last + 1)}
        self._kept = blocks
        cells = torch.cat(list(blocks.values())) if len(blocks) > 1 else blocks[first]
        cells = cells[start - first * MASK_BLOCK : stop - first * MASK_BLOCK]
        c = self.sampler.cell_size
        if c > 1:
            cells = cells.repeat_interleave(c, dim=1).repeat_interleave(c, dim=2)
            cells = cells[:, : self.shape[0], : self.shape[1]]
        return cells
