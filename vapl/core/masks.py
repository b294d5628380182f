"""The perturbed masks ``M_i`` of eq. 1 and 3, drawn block by block from seeded random words.

A mask is the prompt ``D`` with its undecided pixels switched on or off:
``M_i = 1[D = indispensable] + 1[D = undecided] * R_i``, where ``R_i`` is the *draw*, a binary
field of the image's size that does not depend on the prompt. Everything fast in
:mod:`vapl.core.refine` rests on that split: a draw is generated once per seed and serves every sample
that uses the seed, and ``sum_i w_i M_i`` becomes one matrix product with the draws.

Draws come in blocks of :data:`MASK_BLOCK` masks, block ``b`` of seed ``s`` from the random words
of :func:`random_words` keyed by ``(s, b)``, so a sample's masks depend on its seed only, never on
the chunk size, the batch or the order in which they are asked for, nor on the device: the words
are a counter-based hash (SplitMix64) computed with exact integer arithmetic, so CPU and CUDA draw
the same masks from the same seed (torch's own generators do not: CUDA's is Philox, the CPU's
Mersenne Twister).

Two samplers:

* i.i.d. (the paper): each undecided pixel is on with probability ``p`` in each mask. A pixel's
  draw is a 16-bit slice of a 64-bit random word, on below ``round(p 65536)``: four pixels per
  random number, a quarter of the generator calls of ``rand() < p``, with ``p`` rounded to
  1 / 65536 (:attr:`MaskSampler.p_exact`, what eq. 3 divides by).
* balanced: each undecided pixel is on in exactly ``k = round(p N)`` of the N masks, a uniformly
  random k-subset per pixel, drawn sequentially (mask ``i`` switches a pixel on with probability
  ``(k - on so far) / (N - i)``, from a 32-bit slice), which removes the noise of the count in
  eq. 1's denominator.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vapl.core.prompts import INDISPENSABLE, UNDECIDED

#: Masks are drawn in blocks of this many, each block from its own key, so the masks
#: of a sample do not depend on the chunk size used to score them.
MASK_BLOCK = 16

#: The i.i.d. sampler's resolution of ``p``: a pixel's draw is 16 random bits.
P_STEPS = 2**16

_MASK64 = (1 << 64) - 1


def _int64(value: int) -> int:
    """An unsigned 64-bit constant as the signed int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


#: SplitMix64's constants (Steele, Lea and Flood, 2014), as signed int64.
_GOLDEN = _int64(0x9E3779B97F4A7C15)
_MIX1 = _int64(0xBF58476D1CE4E5B9)
_MIX2 = _int64(0x94D049BB133111EB)


def _xor_shift_right(words: torch.Tensor, shift: int) -> torch.Tensor:
    """``words ^= words >>> shift`` in place (a logical shift, on int64)."""
    return words.bitwise_xor_(
        words.bitwise_right_shift(shift).bitwise_and_((1 << (64 - shift)) - 1)
    )


def random_words(key: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``count`` random 64-bit words (int64) for ``key``: word ``j`` is SplitMix64's output for the
    state ``key + (j + 1) * 0x9E3779B97F4A7C15`` (mod 2^64).

    Every operation is exact integer arithmetic modulo 2^64 (wrapping multiplication, logical
    shifts), so the words are the same on every device and in every torch build: the same seed
    draws the same masks on CPU and on CUDA.
    """
    words = torch.arange(1, count + 1, dtype=torch.int64, device=device)
    words.mul_(_GOLDEN).add_(_int64(key))
    _xor_shift_right(words, 30).mul_(_MIX1)
    _xor_shift_right(words, 27).mul_(_MIX2)
    return _xor_shift_right(words, 31)


def block_seed(seed: int, index: int) -> int:
    """The key of block ``index`` of the masks drawn with ``seed`` (:func:`random_words`)."""
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
        if balanced and n_masks >= 2**24:
            raise ValueError(f"balanced masks take n_masks below 2^24, got {n_masks}")
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
    def threshold(self) -> int:
        """I.i.d. sampler: a pixel is on when its 16 random bits, read as a signed integer ``s``,
        give ``s + 32768`` below this."""
        return min(P_STEPS, max(1, round(self.p * P_STEPS)))

    @property
    def p_exact(self) -> float:
        """The probability the i.i.d. masks switch a pixel on: ``p`` rounded to 1 / 65536."""
        return self.threshold / P_STEPS

    @property
    def normaliser(self) -> float:
        """Eq. 3's denominator: ``N p`` for i.i.d. masks (with :attr:`p_exact`), the exact count
        ``k`` for balanced ones (dividing by ``N p`` there would bias ``A`` by the rounding of
        ``k``)."""
        return float(self.k) if self.balanced else self.n_masks * self.p_exact

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
            self._owed = torch.full(  # float32: exact for whole numbers below 2^24
                self.cells, float(self.sampler.k), dtype=torch.float32, device=self.device
            )

    def _block_range(self, index: int) -> tuple[int, int]:
        start = index * MASK_BLOCK
        return start, min(start + MASK_BLOCK, self.sampler.n_masks)

    def _random_bits(self, count: int, bits: int, key: int) -> torch.Tensor:
        """``count`` cell fields of random ``bits``-bit integers (16 or 32, signed view): the
        little-endian slices of :func:`random_words` of ``key``."""
        lanes = 64 // bits
        size = count * self.cells[0] * self.cells[1]
        words = random_words(key, -(-size // lanes), self.device)
        dtype = torch.int16 if bits == 16 else torch.int32
        return words.view(dtype)[:size].view(count, *self.cells)

    def _generate(self, index: int, out: torch.Tensor) -> torch.Tensor:
        """Write block ``index``'s cell draws into ``out`` [count, *cells] (float, 0 or 1)."""
        sampler = self.sampler
        start, _ = self._block_range(index)
        key = block_seed(self.seed, index)
        if not sampler.balanced and sampler.threshold == P_STEPS:
            return out.fill_(1.0)  # p = 1
        if not sampler.balanced:
            # Signed 16-bit values are uniform on [-32768, 32768): on for the lowest `threshold`.
            bits = self._random_bits(len(out), 16, key)
            return torch.lt(bits, sampler.threshold - P_STEPS // 2, out=out)
        bits = self._random_bits(len(out), 32, key).to(torch.int64) & 0xFFFFFFFF
        remaining = torch.arange(
            sampler.n_masks - start, sampler.n_masks - start - len(out), -1, device=self.device
        )
        # Mask j's ticket is uniform on [0, masks remaining) to within 2^-32.
        tickets = ((bits * remaining.view(-1, 1, 1)) >> 32).to(torch.float32)
        for j in range(len(out)):
            # On with probability owed / remaining: always when owed = remaining, never when
            # owed = 0, so exactly k of the N masks whatever the tickets.
            torch.lt(tickets[j], self._owed, out=out[j])
            self._owed.sub_(out[j])
        return out

    def _block(self, index: int, out: torch.Tensor) -> torch.Tensor:
        """Block ``index`` written into ``out``, keeping the balanced sampler's order."""
        if self.sampler.balanced:
            if index < self._next_block:
                self._restart()
            while self._next_block < index:
                skipped = self._block_range(self._next_block)
                self._generate(self._next_block, self._empty(skipped[1] - skipped[0]))
                self._next_block += 1
            self._next_block += 1
        return self._generate(index, out)

    def _empty(self, count: int) -> torch.Tensor:
        return torch.empty((count, *self.cells), dtype=torch.float32, device=self.device)

    def take(self, start: int, stop: int) -> torch.Tensor:
        """Draws of masks ``start`` to ``stop``: float [stop - start, H, W] in {0, 1}.

        Whole blocks are generated in place in the returned tensor; a block cut by ``start`` or
        ``stop`` is generated apart and kept for the next range, which usually begins with it.
        """
        if not 0 <= start < stop <= self.sampler.n_masks:
            raise ValueError(f"mask range {start}:{stop} outside 0:{self.sampler.n_masks}")
        cells = self._empty(stop - start)
        kept: dict[int, torch.Tensor] = {}
        for index in range(start // MASK_BLOCK, (stop - 1) // MASK_BLOCK + 1):
            first, end = self._block_range(index)
            lo, hi = max(start, first), min(stop, end)
            if index in self._kept:
                kept[index] = self._kept[index]
            elif lo == first and hi == end:
                kept[index] = self._block(index, cells[lo - start : hi - start])
                continue
            else:
                kept[index] = self._block(index, self._empty(end - first))
            cells[lo - start : hi - start] = kept[index][lo - first : hi - first]
        self._kept = kept
        c = self.sampler.cell_size
        if c > 1:
            cells = cells.repeat_interleave(c, dim=1).repeat_interleave(c, dim=2)
            cells = cells[:, : self.shape[0], : self.shape[1]]
        return cells
