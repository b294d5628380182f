"""Does a prompt give the label away? A logistic regression that sees only the prompts' shapes.

A prompt is given at test time. When its shape differs between the classes (a small lesion for
positives, a whole organ for negatives) a model can read the label from the prompt instead of the
image, and a prompted method's test accuracy says nothing about the image. :func:`leak_score` fits
a logistic regression on simple shape features of the training prompts and scores it on the test
prompts, against the best constant guess (the test split's majority-class rate). Plain torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vapl.core.prompts import INDISPENSABLE, PRECLUDED

FEATURES = (
    "indispensable_area",
    "precluded_area",
    "box_top",
    "box_left",
    "box_bottom",
    "box_right",
    "centroid_y",
    "centroid_x",
)


def prompt_features(prompts: torch.Tensor) -> torch.Tensor:
    """[n, 8] shape features of prompts [n, H, W] (:data:`FEATURES`): the area fractions of the
    indispensable and the precluded pixels, the indispensable region's bounding box and centroid
    as fractions of the image's height and width (0 where it is empty)."""
    n, height, width = prompts.shape
    indispensable = (prompts == INDISPENSABLE).float()
    precluded = (prompts == PRECLUDED).float()
    area = indispensable.flatten(1).mean(dim=1)
    rows, cols = indispensable.amax(dim=2), indispensable.amax(dim=1)  # [n, H], [n, W]
    ys = torch.arange(height, dtype=torch.float32) / max(height - 1, 1)
    xs = torch.arange(width, dtype=torch.float32) / max(width - 1, 1)
    present = area > 0

    def extent(line: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first = torch.where(line > 0, grid, torch.inf).amin(dim=1)
        last = torch.where(line > 0, grid, -torch.inf).amax(dim=1)
        return torch.where(present, first, 0.0), torch.where(present, last, 0.0)

    top, bottom = extent(rows, ys)
    left, right = extent(cols, xs)
    mass = indispensable.flatten(1).sum(dim=1).clamp_min(1.0)
    centroid_y = (indispensable.sum(dim=2) * ys).sum(dim=1) / mass
    centroid_x = (indispensable.sum(dim=1) * xs).sum(dim=1) / mass
    columns = [area, precluded.flatten(1).mean(dim=1), top, left, bottom, right]
    return torch.stack([*columns, centroid_y, centroid_x], dim=1)


def fit_logistic(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A multinomial logistic regression (L-BFGS, L2 penalty ``l2``) on standardised features:
    ``(weight, bias, mean, std)``."""
    mean, std = features.mean(dim=0), features.std(dim=0).clamp_min(1e-6)
    x = (features - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.t() + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach(), mean, std


@dataclass(frozen=True)
class LeakScore:
    """Test accuracy of the prompt-only classifier and of the best constant guess."""

    accuracy: float
    chance: float
    n_train: int
    n_test: int

    @property
    def excess(self) -> float:
        """How much better than chance the prompts alone predict the label."""
        return self.accuracy - self.chance

    def __str__(self) -> str:
        return (
            f"prompt-only accuracy {self.accuracy:.3f}, majority class {self.chance:.3f} "
            f"(excess {self.excess:+.3f}; {self.n_train} training, {self.n_test} test prompts)"
        )


def leak_score(
    train_prompts: torch.Tensor,
    train_labels: torch.Tensor,
    test_prompts: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int | None = None,
) -> LeakScore:
    """Fit on the training prompts, score on the test prompts (:class:`LeakScore`)."""
    classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    weight, bias, mean, std = fit_logistic(
        prompt_features(train_prompts), train_labels.long(), classes
    )
    logits = ((prompt_features(test_prompts) - mean) / std) @ weight.t() + bias
    accuracy = float((logits.argmax(dim=1) == test_labels).float().mean())
    chance = float(torch.bincount(test_labels.long(), minlength=classes).max()) / len(test_labels)
    return LeakScore(accuracy, chance, len(train_labels), len(test_labels))
