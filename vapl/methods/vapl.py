"""VAPL: co-training of a prompted and an unprompted model with refined prompts (Algorithm 1)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from vapl.core.losses import REDUCTIONS, activation_distance, parameter_distance
from vapl.core.prompts import PRECLUDED
from vapl.core.refine import MonotoneWeight, PromptRefiner, expected_attention, sample_seed
from vapl.core.schedule import PHASE_UNITS, f_units_before, phase_at, trainer_epochs
from vapl.methods.base import MethodModule

#: The epoch slot of the mask seed at validation, test and predict time: evaluation draws the same
#: masks whatever epoch the model was saved at.
EVAL_EPOCH = -1
#: G phases seed their masks with this plus the number of F units before them, in place of the
#: epoch: every unit of one G phase draws the same masks, so its scores can be reused.
G_PHASE_SLOT = 1_000_000
#: Without refinement (VAPL-1), f_m sees ``I * A`` with ``A`` eq. 3 in expectation with equal
#: weights (``expected``) or ``1[D != precluded]`` (``keep_undecided``).
UNREFINED = ("expected", "keep_undecided")


class VAPL(MethodModule):
    """The prompted model f_m sees ``I * A``, the unprompted f_o sees ``I``.

    Training alternates (Algorithm 1): ``f_epochs`` epochs update f_m and f_o with g frozen (the
    F phase, eqs. 9 and 10), then ``g_epochs`` epochs update g with both networks frozen (the G
    phase, eq. 11). ``trainer.max_epochs`` counts the epochs that update the networks, as for
    every other method; the G epochs come on top (the trainer runs longer, see
    :func:`vapl.core.schedule.trainer_epochs`). ``phase_unit="batch"`` alternates every
    ``f_steps`` and ``g_steps`` batches instead.

    Args:
        n_masks: N, the perturbed masks drawn per prompted sample (eq. 1 and 3; paper: 5000).
        p: probability that a mask keeps an undecided pixel (paper: 0.1).
        cell_size: side of the square cells a mask switches together (1: single pixels).
        chunk_size: masked images per forward pass while scoring.
        lambda_param: l1, weight of L_Param (eq. 4; paper: 0.1).
        lambda_activ: l2, weight of L_Activ (eq. 5; paper: 1).
        lambda_agg: l3, weight of L_Agg = (g(1) - 1)^2 (eq. 11; paper: 10).
        phase_unit: ``epoch`` (the paper) or ``batch``: what ``f``/``g`` phases count.
        f_epochs: epochs of an F phase (``phase_unit="epoch"``; paper: 5).
        g_epochs: epochs of a G phase (``phase_unit="epoch"``; paper: 5).
        f_steps: batches of an F phase (``phase_unit="batch"``).
        g_steps: batches of a G phase (``phase_unit="batch"``).
        g_lr: g's learning rate; ``None``: ``lr``.
        g_hidden: width of g's hidden layers.
        g_activ_loss: add ``l2 L_Activ`` to g's objective (ours; eq. 11 has only
            ``L_Pred + l3 L_Agg``).
        normalization: how ``A`` is scaled (:func:`vapl.core.refine.normalise_attention`):
            ``paper`` (eq. 3 as it is), ``total_weight`` (divided by what an always-on pixel
            gets; scale-free) or ``max`` (by the per-sample maximum).
        loss_reduction: ``sum`` (the paper's eq. 6: cross-entropy and L_Activ summed over the
            batch) or ``mean`` (averaged: the paper's l1 then corresponds to ``l1 / batch``).
        mask_seed: seed of the masks (with the epoch and the sample id).
        use_refinement: ``False`` is VAPL-1: f_m sees ``I * A`` with ``A`` from
            ``unrefined_attention``; no g, no G phase.
        unrefined_attention: VAPL-1's ``A``: ``expected`` (eq. 3 with equal weights, in
            expectation: an undecided pixel gets what the refinement gives one that does not
            matter) or ``keep_undecided`` (``1[D != precluded]``).
        use_param_loss: ``False`` is VAPL-2: no L_Param.
        use_activ_loss: ``False`` is VAPL-3: no L_Activ.
        use_weight_fn: ``False`` is VAPL-4: g is the identity (eq. 1), there is no G phase.
        balanced_masks: each undecided pixel is on in exactly ``round(p N)`` masks (less noise
            than i.i.d. masks at the same N; docs/performance.md).
        shared_masks: one set of masks per epoch for all samples (each applies its own prompt).
        autocast: score the masked images under bf16 autocast (GPU, or CPU with AMX).
        channels_last: score in channels-last layout (``False``: NCHW).
        **kwargs: the settings every method shares (:class:`~vapl.methods.base.MethodModule`).
    """

    heads = ("prompted", "unprompted")
    single_model = False

    def __init__(
        self,
        n_masks: int = 5000,
        p: float = 0.1,
        cell_size: int = 1,
        chunk_size: int = 64,
        lambda_param: float = 0.1,
        lambda_activ: float = 1.0,
        lambda_agg: float = 10.0,
        phase_unit: str = "epoch",
        f_epochs: int = 5,
        g_epochs: int = 5,
        f_steps: int = 5,
        g_steps: int = 5,
        g_lr: float | None = None,
        g_hidden: int = 16,
        g_activ_loss: bool = False,
        normalization: str = "total_weight",
        loss_reduction: str = "sum",
        mask_seed: int = 0,
        use_refinement: bool = True,
        unrefined_attention: str = "expected",
        use_param_loss: bool = True,
        use_activ_loss: bool = True,
        use_weight_fn: bool = True,
        balanced_masks: bool = False,
        shared_masks: bool = False,
        autocast: bool = False,
        channels_last: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if phase_unit not in PHASE_UNITS:
            raise ValueError(f"phase_unit must be one of {PHASE_UNITS}, got {phase_unit!r}")
        f_len, g_len = self.phase_lengths
        name = "f_epochs/g_epochs" if phase_unit == "epoch" else "f_steps/g_steps"
        if f_len < 1 or g_len < 0:
            raise ValueError(f"{name} must be >= 1 and >= 0, got {f_len}, {g_len}")
        if unrefined_attention not in UNREFINED:
            raise ValueError(
                f"unrefined_attention must be one of {UNREFINED}, got {unrefined_attention!r}"
            )
        if loss_reduction not in REDUCTIONS:
            raise ValueError(f"loss_reduction must be one of {REDUCTIONS}, got {loss_reduction!r}")
        if use_refinement and use_weight_fn and g_len == 0:
            raise ValueError(
                f"{name.split('/')[1]}=0 with use_weight_fn=true: g would never be trained and "
                "would weigh the masks with its random initialisation. Give the G phase a length, "
                "or set use_weight_fn=false (VAPL-4, g = identity)."
            )
        self.automatic_optimization = False
        self.prompted_model = self.make_backbone()
        # f_o starts as a copy of f_m: L_Param measures their distance, so it starts at zero.
        self.unprompted_model = copy.deepcopy(self.prompted_model)
        self.learns_weights = use_refinement and use_weight_fn
        weight_fn = MonotoneWeight(hidden=g_hidden) if self.learns_weights else None
        self.refiner = PromptRefiner(
            n_masks=n_masks,
            p=p,
            cell_size=cell_size,
            chunk_size=chunk_size,
            weight_fn=weight_fn,
            balanced=balanced_masks,
            autocast=autocast,
            channels_last=channels_last,
            normalization=normalization,
        )
        self.cycle_position = 0  # training batches so far: saved in checkpoints
        #: F units (epochs or batches) of network updates the trainer's budget allows; ``None``:
        #: no budget known (the schedule is then periodic). Set when fitting starts.
        self.unit_budget: int | None = None
        self._extended_loop: int | None = None
        self._score_cache: dict[tuple[int, str], torch.Tensor] = {}
        self._score_cache_slot: int | None = None

    # ----- Algorithm 1's bookkeeping --------------------------------------------------------
    @property
    def phase_lengths(self) -> tuple[int, int]:
        """``(f, g)``: the F and G phases' lengths in :attr:`phase_unit` units."""
        hp = self.hparams
        if hp.phase_unit == "epoch":
            return hp.f_epochs, hp.g_epochs
        return hp.f_steps, hp.g_steps

    @property
    def unit(self) -> int:
        """The current unit of training: the epoch, or the batch count (``phase_unit="batch"``)."""
        return self.current_epoch if self.hparams.phase_unit == "epoch" else self.cycle_position

    @property
    def phase(self) -> str:
        """``"F"`` or ``"G"``: the phase the next training batch belongs to."""
        if not self.learns_weights:
            return "F"
        return phase_at(self.unit, *self.phase_lengths, self.unit_budget)

    def setup(self, stage: str) -> None:
        """``trainer.max_epochs`` is the networks' budget: extend the trainer by the G units."""
        if stage != "fit" or not self.learns_weights or self._trainer is None:
            return
        trainer = self.trainer
        loop = trainer.fit_loop
        if self._extended_loop == id(loop):  # this trainer has been extended already
            return
        self.unit_budget = None
        if trainer.fast_dev_run:
            return
        network_epochs = loop.max_epochs
        if network_epochs is None or network_epochs < 0:
            rank_zero_info("VAPL: no max_epochs, so no budget: F and G phases simply alternate")
            return
        hp = self.hparams
        total = trainer_epochs(network_epochs, hp.phase_unit, *self.phase_lengths)
        loop.max_epochs = total
        self._extended_loop = id(loop)
        self._network_epochs = network_epochs
        if hp.phase_unit == "epoch":
            self.unit_budget = network_epochs
        f_len, g_len = self.phase_lengths
        rank_zero_info(
            f"VAPL: {network_epochs} epochs of network updates (trainer.max_epochs) in F phases "
            f"of {f_len} {hp.phase_unit}s, each followed by a G phase of {g_len} {hp.phase_unit}s "
            f"that trains g only: the trainer runs {total} epochs."
        )

    def on_train_start(self) -> None:
        if self.hparams.phase_unit != "batch" or self._extended_loop is None:
            return
        batches = self.trainer.num_training_batches
        if math.isfinite(batches):
            self.unit_budget = self._network_epochs * int(batches)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vapl_cycle_position"] = self.cycle_position

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.cycle_position = int(checkpoint.get("vapl_cycle_position", 0))
        self._clear_score_cache()

    # ----- refinement -----------------------------------------------------------------------
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

    # ----- training ---------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.phase == "F":
            self._f_step(batch)
        else:
            self._g_step(batch)
        self.cycle_position += 1

    def _cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 6's cross-entropy, summed over the batch (``loss_reduction="mean"``: averaged)."""
        return F.cross_entropy(logits, labels, reduction=self.hparams.loss_reduction)

    @property
    def _batch_scale(self) -> int:
        """Eq. 6 sums over the whole batch; under DDP each process sums its share and the
        processes' gradients are averaged, so each share counts ``world_size`` times."""
        if self.hparams.loss_reduction != "sum" or self._trainer is None:
            return 1
        return self.trainer.world_size

    def _co_training_losses(
        self, images: torch.Tensor, attention: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        logits_m, features_m = self.prompted_model.forward_with_features(
            images * attention[:, None]
        )
        logits_o, features_o = self.unprompted_model.forward_with_features(images)
        return {
            "logits_m": logits_m,
            "logits_o": logits_o,
            "pred_m": self._cross_entropy(logits_m, labels),
            "pred_o": self._cross_entropy(logits_o, labels),
            "activ": activation_distance(features_o, features_m, self.hparams.loss_reduction),
        }

    def _f_step(self, batch: dict[str, Any]) -> None:
        """Eqs. 9 and 10, g frozen: ``L_Pred + l1 L_Param + l2 L_Activ`` on f_m and f_o."""
        hp = self.hparams
        if self._score_cache:
            self._clear_score_cache()  # the networks change: the last G phase's scores are stale
        optimizer = self.optimizers()
        optimizer = optimizer[0] if isinstance(optimizer, list) else optimizer
        labels = batch["label"]
        with torch.no_grad():
            attention = self.refined_prompts(batch, targets=labels, epoch=self.current_epoch)
        self.toggle_optimizer(optimizer)
        terms = self._co_training_losses(batch["image"], attention, labels)
        loss = terms["pred_m"] + terms["pred_o"]
        if hp.use_activ_loss:
            loss = loss + hp.lambda_activ * terms["activ"]
        loss = self._batch_scale * loss
        loss_param = parameter_distance(self.unprompted_model, self.prompted_model)
        if hp.use_param_loss:
            loss = loss + hp.lambda_param * loss_param
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.untoggle_optimizer(optimizer)

        size = len(labels)
        per_sample = size if hp.loss_reduction == "sum" else 1  # logged losses: per sample
        self.log_dict(
            {
                "train/loss": loss.detach(),
                "train/loss_pred": (terms["pred_m"] + terms["pred_o"]).detach() / per_sample,
                "train/loss_param": loss_param.detach(),
                "train/loss_activ": terms["activ"].detach() / per_sample,
            },
            batch_size=size,
        )
        pred_m, pred_o = (
            terms["pred_m"].detach() / per_sample,
            terms["pred_o"].detach() / per_sample,
        )
        self.log("train/prompted/loss", pred_m, batch_size=size, prog_bar=True)
        self.log("train/unprompted/loss", pred_o, batch_size=size)
        self.update_metrics("train", "prompted", terms["logits_m"].argmax(1), labels)
        self.update_metrics("train", "unprompted", terms["logits_o"].argmax(1), labels)

    def g_objective(self, batch: dict[str, Any], scores: torch.Tensor) -> dict[str, torch.Tensor]:
        """Eq. 11: g follows the gradient of ``L_Pred + l3 L_Agg`` (``g_activ_loss``, ours, adds
        ``l2 L_Activ``); L_Pred's f_o term does not depend on g. ``scores``: the prompted rows'
        target scores of the current G phase. Returns ``loss``, ``pred`` and ``agg``."""
        hp = self.hparams
        attention = self.refined_prompts(
            batch, targets=batch["label"], epoch=self._g_phase_slot(), scores=scores
        )
        logits_m, features_m = self.prompted_model.forward_with_features(
            batch["image"] * attention[:, None]
        )
        terms = {
            "pred": self._cross_entropy(logits_m, batch["label"]),
            "agg": self.refiner.weight_fn.aggregation_loss(),
        }
        batch_terms = terms["pred"]
        if hp.g_activ_loss and hp.use_activ_loss:
            with torch.no_grad():
                features_o = self.unprompted_model.features(batch["image"])
            activ = activation_distance(features_o, features_m, hp.loss_reduction)
            batch_terms = batch_terms + hp.lambda_activ * activ
        terms["loss"] = self._batch_scale * batch_terms + hp.lambda_agg * terms["agg"]
        return terms

    def _g_step(self, batch: dict[str, Any]) -> None:
        """A G step: eq. 11 on g, f_m and f_o frozen (eval mode: batch-norm statistics too)."""
        optimizer = self.optimizers()[1]
        scores = self._cached_scores(batch)
        frozen = [m.training for m in (self.prompted_model, self.unprompted_model)]
        self.prompted_model.eval()
        self.unprompted_model.eval()
        self.toggle_optimizer(optimizer)
        terms = self.g_objective(batch, scores)
        optimizer.zero_grad()
        self.manual_backward(terms["loss"])
        optimizer.step()
        self.untoggle_optimizer(optimizer)
        self.prompted_model.train(frozen[0])
        self.unprompted_model.train(frozen[1])
        size = len(batch["label"])
        self.log("train/loss_agg", terms["agg"].detach(), batch_size=size)
        self.log("train/g_loss", terms["loss"].detach(), batch_size=size)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        networks = list(self.prompted_model.parameters()) + list(self.unprompted_model.parameters())
        optimizers = [self.make_optimizer(networks)]
        if self.learns_weights:
            optimizers.append(
                self.make_optimizer(self.refiner.weight_fn.parameters(), self.hparams.g_lr)
            )
        return optimizers

    # ----- evaluation -------------------------------------------------------------------------
    def predict_both(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Prompted and unprompted class probabilities and the refined prompt; no label used.

        The prompted prediction of a sample without a prompt is f_o's.
        """
        attention = self.refined_prompts(batch, targets=None, epoch=EVAL_EPOCH)
        probs_m = torch.softmax(self.prompted_model(batch["image"] * attention[:, None]), dim=1)
        probs_o = torch.softmax(self.unprompted_model(batch["image"]), dim=1)
        probs_m = torch.where(batch["has_prompt"][:, None], probs_m, probs_o)
        return {"prompted_probs": probs_m, "unprompted_probs": probs_o, "refined_prompt": attention}

    def _evaluate(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        out = self.predict_both(batch)
        labels = batch["label"]
        for head in self.heads:
            probs = out[f"{head}_probs"]
            self.update_metrics(stage, head, probs.argmax(1), labels)
            loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels)
            self.log(f"{stage}/{head}/loss", loss, batch_size=len(labels), sync_dist=True)
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test")

    def explanation_heads(
        self, batch: dict[str, Any], outputs: Any
    ) -> dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor | None]]:
        """f_o's Grad-CAM on ``I`` explains the unprompted head; f_m's on ``I * A`` the prompted
        head, scored on the samples that have a prompt."""
        heads = {"unprompted": (self.unprompted_model, batch["image"], None)}
        if isinstance(outputs, dict) and "refined_prompt" in outputs:
            prompted_input = batch["image"] * outputs["refined_prompt"][:, None]
            heads["prompted"] = (self.prompted_model, prompted_input, batch["has_prompt"])
        return heads

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        out = self.predict_both(batch)
        return {
            "id": list(batch["id"]),
            "prompted_pred": out["prompted_probs"].argmax(1),
            "unprompted_pred": out["unprompted_probs"].argmax(1),
            **out,
        }
