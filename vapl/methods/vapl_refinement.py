"""VAPL's refinement wiring: which masks a batch draws, the refined prompts ``A`` f_m sees, the G
phase's score cache and validation's own mask count.

:class:`RefinementWiring` is a mixin of :class:`vapl.methods.vapl.VAPL` (the tensor code is
:mod:`vapl.core.refine`); it reads the module's ``hparams``, ``refiner``, ``prompted_model`` and
its Algorithm 1 bookkeeping (``unit``, ``phase_lengths``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from vapl.core.masks import MaskSampler
from vapl.core.prompts import PRECLUDED
from vapl.core.refine import PromptRefiner, expected_attention, sample_seed
from vapl.core.schedule import f_units_before

#: The epoch slot of the mask seed at validation, test and predict time: evaluation draws the same
#: masks whatever epoch the model was saved at.
EVAL_EPOCH = -1
#: G phases seed their masks with this plus the number of F units before them, in place of the
#: epoch: every unit of one G phase draws the same masks, so its scores can be reused.
G_PHASE_SLOT = 1_000_000
#: Without refinement (VAPL-1), f_m sees ``I * A`` with ``A`` eq. 3 in expectation with equal
#: weights (``expected``) or ``1[D != precluded]`` (``keep_undecided``).
UNREFINED = ("expected", "keep_undecided")


class RefinementWiring:
    """Refined prompts for training (the label's score), G phases (scores cached per phase) and
    evaluation (the predicted class's score, ``EVAL_EPOCH`` masks, ``val_n_masks`` at validation).
    """

    hparams: Any
    refiner: PromptRefiner
    prompted_model: torch.nn.Module
    unit: int
    phase_lengths: tuple[int, int]

    def _init_refinement_state(self, val_n_masks: int | None, p: float, cell_size: int) -> None:
        self._score_cache: dict[tuple[int, str], torch.Tensor] = {}
        self._score_cache_slot: int | None = None
        self._val_sampler = (
            None if val_n_masks is None else MaskSampler(val_n_masks, p, cell_size, balanced=True)
        )

    def _seeds(self, ids: list[str], epoch: int) -> list[int]:
        if self.hparams.shared_masks:  # one draw per epoch, whatever the batch: still reproducible
            return [sample_seed(self.hparams.mask_seed, epoch, "<shared>")] * len(ids)
        return [sample_seed(self.hparams.mask_seed, epoch, i) for i in ids]

    def _target_scores(
        self, batch: dict[str, Any], rows: torch.Tensor, targets: torch.Tensor | None, epoch: int
    ) -> torch.Tensor:
        """Target-class scores [b, N] of f_m on the masked images of the selected rows."""
        ids = [batch["id"][i] for i in rows.tolist()]
        was_training = self.prompted_model.training
        self.prompted_model.eval()  # scoring never updates batch-norm statistics
        probs = self.refiner.score(
            self.prompted_model,
            batch["image"][rows],
            batch["prompt"][rows],
            self._seeds(ids, epoch),
        )
        self.prompted_model.train(was_training)
        return self.refiner.target_scores(probs, targets).clone()

    def refined_prompts(
        self,
        batch: dict[str, Any],
        targets: torch.Tensor | None = None,
        epoch: int = EVAL_EPOCH,
        scores: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The attention ``A`` [B, H, W] that multiplies each image for f_m (in [0, 1] unless
        ``normalization="paper"``).

        ``targets=None`` (evaluation) scores the class f_m predicts, never the label. Samples with
        no prompt get ``A = 1``. ``scores`` reuses target scores of the prompted rows.
        """
        prompts = batch["prompt"]
        attention = torch.ones_like(prompts)
        rows = torch.nonzero(batch["has_prompt"], as_tuple=True)[0]
        if rows.numel() == 0:
            return attention
        if not self.hparams.use_refinement:
            if self.hparams.unrefined_attention == "keep_undecided":
                unrefined = (prompts[rows] != PRECLUDED).to(prompts.dtype)
            else:
                sampler, mode = self.refiner.sampler, self.refiner.normalization
                unrefined = expected_attention(prompts[rows], sampler, mode)
            return attention.index_put((rows,), unrefined.to(attention.dtype))
        if scores is None:
            row_targets = None if targets is None else targets[rows]
            scores = self._target_scores(batch, rows, row_targets, epoch)
        ids = [batch["id"][i] for i in rows.tolist()]
        refined = self.refiner.refine_from_scores(scores, prompts[rows], self._seeds(ids, epoch))
        return attention.index_put((rows,), refined.to(attention.dtype))

    def _g_phase_slot(self) -> int:
        """The seed slot of the current G phase's masks (in place of the epoch): the number of F
        units before it, the same for every unit of the phase, different for every phase."""
        return G_PHASE_SLOT + f_units_before(self.unit, *self.phase_lengths)

    def _clear_score_cache(self) -> None:
        self._score_cache.clear()
        self._score_cache_slot = None

    def _cached_scores(self, batch: dict[str, Any]) -> torch.Tensor:
        """G phase: f_m is frozen, so each sample's scores are computed once per phase.

        The masks of a G phase are seeded by the phase, not the epoch, so a phase that sees a
        sample again (every G epoch after the first) reuses its scores. The cache holds one
        phase: it is emptied when another phase begins.
        """
        slot = self._g_phase_slot()
        if slot != self._score_cache_slot:
            self._clear_score_cache()
            self._score_cache_slot = slot
        rows = torch.nonzero(batch["has_prompt"], as_tuple=True)[0]
        keys = [(slot, batch["id"][i]) for i in rows.tolist()]
        missing = torch.tensor(
            [k not in self._score_cache for k in keys], dtype=torch.bool, device=rows.device
        )
        if bool(missing.any()):
            fresh = self._target_scores(batch, rows[missing], batch["label"][rows[missing]], slot)
            for key, row in zip([k for k, m in zip(keys, missing.tolist()) if m], fresh):
                self._score_cache[key] = row
        if not keys:
            return torch.zeros(0, self.hparams.n_masks, device=rows.device)
        return torch.stack([self._score_cache[k] for k in keys])

    @contextmanager
    def _validation_masks(self) -> Iterator[None]:
        """The refiner draws ``val_n_masks`` balanced masks inside this block (if set). VAPL-1
        draws no masks: its ``A`` (eq. 3 in expectation) keeps the training sampler's ``N``."""
        if self._val_sampler is None or not self.hparams.use_refinement:
            yield
            return
        full, self.refiner.sampler = self.refiner.sampler, self._val_sampler
        try:
            yield
        finally:
            self.refiner.sampler = full
