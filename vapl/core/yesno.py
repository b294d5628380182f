"""The tensor side of the Yes-No baselines (CRAYON, "Effective Guidance for Model Attention with
Simple Yes-no Annotations", 2024). Plain torch, no Lightning import.

* Answers: ``YES = 1``, ``NO = 0``, ``MAYBE = -1`` (the sample contract's ``yesno`` encoding), one
  per training image (is the original model's Grad-CAM on the relevant part?) and one per neuron of
  the last convolutional stage (is its concept relevant?). :func:`read_answers` reads them from a
  CSV file, :func:`write_answers` writes one.
* The attention terms on Grad-CAMs ``A`` (current) and ``A0`` (stored, the original model's), both
  [B, h, w] in [0, 1]: :func:`relevant_term` ``sum(A (1 - A0)) / sum(1 - A0)`` for a "yes" image (do
  not look outside what was judged right) and :func:`irrelevant_term` ``sum(A A0) / sum(A0)`` for a
  "no" image (do not look where you looked).
* :class:`NeuronMask`: multiplies the feature map's channels by a 0/1 buffer (pruning).
* The oracle: :func:`map_overlap` and :func:`patch_overlap` score a map or a patch against a
  ground-truth explanation; :func:`oracle_answers` turns scores into answers with a threshold.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vapl.core.errors import UserInputError

YES, NO, MAYBE = 1, 0, -1
ANSWER_WORDS = {"yes": YES, "no": NO, "maybe": MAYBE}
WORD_OF = {value: word for word, value in ANSWER_WORDS.items()}
KINDS = ("image", "neuron")
CSV_HEADER = ("kind", "key", "answer")


class AnswerError(UserInputError, ValueError):
    """A malformed answers file; the message names the file and the line."""


# ----- answers files -----------------------------------------------------------------------------
@dataclass
class Answers:
    """Yes/no/maybe per image id and per neuron index (absent means maybe)."""

    images: dict[str, int] = field(default_factory=dict)
    neurons: dict[int, int] = field(default_factory=dict)

    def image_codes(self, ids: Sequence[str]) -> torch.Tensor:
        """int8 [N]: the answer of each id, ``MAYBE`` where there is none."""
        return torch.tensor([self.images.get(i, MAYBE) for i in ids], dtype=torch.int8)

    def neuron_mask(self, num_neurons: int) -> torch.Tensor:
        """float [C]: 0 for neurons answered "no" (pruned), 1 for yes and maybe (kept)."""
        mask = torch.ones(num_neurons)
        for index, answer in self.neurons.items():
            if answer == NO:
                mask[index] = 0.0
        return mask

    def counts(self, kind: str) -> dict[str, int]:
        values = list(self.images.values() if kind == "image" else self.neurons.values())
        return {word: values.count(code) for word, code in ANSWER_WORDS.items()}


def read_answers(
    path: str | Path, image_ids: Iterable[str] | None = None, num_neurons: int | None = None
) -> Answers:
    """Read a CSV with header ``kind,key,answer``: ``image,<image id>,yes|no|maybe`` or
    ``neuron,<index>,yes|no|maybe``. Words are case-insensitive; blank lines and lines starting with
    ``#`` are skipped. With ``image_ids`` / ``num_neurons`` given, unknown ids and out-of-range
    indices are errors. Every error names the file and line."""
    path = Path(path)
    known = None if image_ids is None else set(image_ids)
    answers = Answers()
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header_seen = False
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        where = f"{path}, line {line}"
        if not header_seen:
            if tuple(c.lower() for c in cells) != CSV_HEADER:
                raise AnswerError(f"{where}: expected the header {','.join(CSV_HEADER)!r}")
            header_seen = True
            continue
        if len(cells) != 3:
            raise AnswerError(f"{where}: expected 3 fields (kind,key,answer), got {len(cells)}")
        kind, key, word = cells[0].lower(), cells[1], cells[2].lower()
        if word not in ANSWER_WORDS:
            raise AnswerError(
                f"{where}: unknown answer {cells[2]!r}; use one of {', '.join(ANSWER_WORDS)}"
            )
        if kind == "image":
            if known is not None and key not in known:
                raise AnswerError(f"{where}: unknown image id {key!r} (not in the export)")
            answers.images[key] = ANSWER_WORDS[word]
        elif kind == "neuron":
            try:
                index = int(key)
            except ValueError:
                raise AnswerError(f"{where}: neuron index {key!r} is not an integer") from None
            if index < 0 or (num_neurons is not None and index >= num_neurons):
                limit = "" if num_neurons is None else f" (the layer has {num_neurons} neurons)"
                raise AnswerError(f"{where}: neuron index {index} is out of range{limit}")
            answers.neurons[index] = ANSWER_WORDS[word]
        else:
            raise AnswerError(f"{where}: unknown kind {cells[0]!r}; use image or neuron")
    if not header_seen:
        raise AnswerError(f"{path}: empty answers file (expected the header kind,key,answer)")
    return answers


def write_answers(path: str | Path, answers: Answers) -> None:
    """Write ``answers`` in the format :func:`read_answers` reads."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for key, code in answers.images.items():
            writer.writerow(("image", key, WORD_OF[code]))
        for index, code in sorted(answers.neurons.items()):
            writer.writerow(("neuron", index, WORD_OF[code]))


# ----- attention terms ---------------------------------------------------------------------------
def scale_to_max(maps: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """ReLU, then divide each map of [B, h, w] by its maximum (the reference's Grad-CAM scaling)."""
    maps = torch.relu(maps) + eps
    return maps / maps.flatten(1).max(dim=1).values.view(-1, 1, 1)


def relevant_term(cam: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """[B]: ``sum(A (1 - A0)) / sum(1 - A0)``, attention outside the stored map of a "yes" image."""
    outside = 1.0 - stored
    return (cam * outside).flatten(1).sum(1) / outside.flatten(1).sum(1).clamp_min(1e-10)


def irrelevant_term(cam: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """[B]: ``sum(A A0) / sum(A0)``, attention inside the stored map of a "no" image."""
    return (cam * stored).flatten(1).sum(1) / stored.flatten(1).sum(1).clamp_min(1e-10)


def yesno_attention_loss(
    cam: torch.Tensor,
    stored: torch.Tensor,
    answers: torch.Tensor,
    alpha_per_answer: float,
    beta_per_answer: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha' * sum_yes relevant, beta' * sum_no irrelevant)`` over a batch; maybe adds nothing.

    ``alpha'`` and ``beta'`` are alpha and beta already divided by the numbers of yes and no answers
    in the training set, as the reference does."""
    yes = (answers == YES).to(cam.dtype)
    no = (answers == NO).to(cam.dtype)
    loss_yes = alpha_per_answer * (yes * relevant_term(cam, stored)).sum()
    loss_no = beta_per_answer * (no * irrelevant_term(cam, stored)).sum()
    return loss_yes, loss_no


# ----- pruning -----------------------------------------------------------------------------------
class NeuronMask(nn.Module):
    """``x * mask[None, :, None, None]``; ``mask`` is a saved buffer of 0 (pruned) and 1 (kept)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{int(self.mask.sum())}/{self.mask.numel()} kept"


# ----- concepts ----------------------------------------------------------------------------------
def peak_cells(activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a feature map [B, C, h, w]: the per-channel maximum [B, C] and its cell (row, col) as
    long [B, C, 2] (the first maximum in row-major order)."""
    flat = activations.flatten(2)
    values, index = flat.max(dim=2)
    width = activations.shape[-1]
    return values, torch.stack((index // width, index % width), dim=-1)


def patch_box(cell: torch.Tensor, stride: int, patch_size: int, image_size: tuple[int, int]):
    """``(top, left, bottom, right)`` of the ``patch_size`` square centred on a feature cell's
    receptive-field centre, clipped to the image."""
    height, width = image_size
    size = min(patch_size, height, width)
    centre_y = int(cell[0]) * stride + stride // 2
    centre_x = int(cell[1]) * stride + stride // 2
    top = min(max(0, centre_y - size // 2), height - size)
    left = min(max(0, centre_x - size // 2), width - size)
    return top, left, top + size, left + size


# ----- the oracle --------------------------------------------------------------------------------
def map_overlap(stored: torch.Tensor, explanation: torch.Tensor) -> torch.Tensor:
    """[B]: the share of each stored map's mass (upsampled bilinearly to the explanation's size)
    that falls inside the explanation (> 0.5); NaN where the explanation is empty."""
    size = tuple(explanation.shape[-2:])
    maps = F.interpolate(stored[:, None].float(), size=size, mode="bilinear", align_corners=False)
    maps = maps[:, 0].clamp_min(0)
    inside = (explanation > 0.5).float()
    share = (maps * inside).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-10)
    return torch.where(inside.flatten(1).any(1), share, torch.full_like(share, float("nan")))


def patch_overlap(explanation: torch.Tensor, box: Sequence[int]) -> float:
    """The fraction of a patch ``(top, left, bottom, right)`` of an [H, W] explanation inside it."""
    top, left, bottom, right = box
    return float((explanation[top:bottom, left:right] > 0.5).float().mean())


def oracle_answers(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """int8: ``YES`` where ``score >= threshold``, ``NO`` below, ``MAYBE`` where it is NaN."""
    codes = torch.where(scores >= threshold, YES, NO).to(torch.int8)
    return torch.where(torch.isnan(scores), torch.tensor(MAYBE, dtype=torch.int8), codes)
