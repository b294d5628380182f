"""Training losses. Plain torch, no Lightning import.

VAPL's co-training terms (L_Param, eq. 4; L_Activ, eq. 5) live here; the attention losses of the
baselines join them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vapl.core.prompts import INDISPENSABLE, PRECLUDED

#: How the batch-dependent terms of VAPL's objective (the cross-entropy of eq. 6 and L_Activ) are
#: reduced over the batch: ``sum`` (the paper) or ``mean``.
REDUCTIONS = ("sum", "mean")


def parameter_distance(
    model_a: nn.Module, model_b: nn.Module, layer_types: tuple[type[nn.Module], ...] = (nn.Conv2d,)
) -> torch.Tensor:
    """Eq. 4, ``L_Param``: the sum over conv layers of ``||W_a - W_b||_F^2`` (a sum, not a mean).

    The two models must have the same architecture; layers are paired by name.
    """
    layers_b = dict(model_b.named_modules())
    total = None
    for name, layer_a in model_a.named_modules():
        if not isinstance(layer_a, layer_types):
            continue
        layer_b = layers_b.get(name)
        if layer_b is None or layer_b.weight.shape != layer_a.weight.shape:
            raise ValueError(
                f"layer {name!r} has no counterpart of the same shape in the other model"
            )
        term = (layer_a.weight - layer_b.weight).pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("the models have no layer of the types compared")
    return total


def activation_distance(
    features_a: torch.Tensor, features_b: torch.Tensor, reduction: str = "sum"
) -> torch.Tensor:
    """Eq. 5, ``L_Activ``: ``||S_a - S_b||^2``, the squared norm summed over feature dimensions
    and, like eq. 6's cross-entropy, over the batch (``reduction="mean"``: averaged over it)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    per_sample = (features_a - features_b).pow(2).flatten(1).sum(dim=1)
    return per_sample.sum() if reduction == "sum" else per_sample.mean()


# ----- attention losses of the CAM-guided baselines (RES, Gao et al., KDD 2022) ---------------
#
# ``cam`` is the normalised Grad-CAM [B, h, w] in [0, 1); ``factual`` and ``counterfactual`` are
# the human annotation brought to the CAM's resolution (:func:`coarse_annotation`): the fraction of
# each cell's pixels that are factual (must look) and counterfactual (must not look). A cell that is
# wholly one kind is the reference code's +1 or -1 cell; a mixed cell weighs each kind by its area.
# Every loss is zero, not NaN, when nothing it needs is annotated.

RES_FACTUAL = 1.0
RES_COUNTERFACTUAL = -1.0
RES_UNKNOWN = 0.0


def res_encoding(prompt: torch.Tensor) -> torch.Tensor:
    """Our prompt encoding to RES's: indispensable (+1) -> factual (+1), precluded (0) ->
    counterfactual (-1), undecided (-1) -> unknown (0). The one place the two encodings meet."""
    res = torch.full_like(prompt, RES_UNKNOWN)
    res[prompt == INDISPENSABLE] = RES_FACTUAL
    res[prompt == PRECLUDED] = RES_COUNTERFACTUAL
    return res


def coarse_annotation(
    res_map: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(factual, counterfactual)`` [B, h, w]: the area fraction of each CAM cell's pixels that
    are factual and counterfactual in the RES-encoded map [B, H, W] (area averaging, so every
    annotated pixel counts; the reference code keeps one pixel per block)."""
    kinds = torch.stack([res_map == RES_FACTUAL, res_map == RES_COUNTERFACTUAL], dim=1)
    coarse = F.adaptive_avg_pool2d(kinds.to(torch.float32), size)
    return coarse[:, 0], coarse[:, 1]


def _zero(cam: torch.Tensor) -> torch.Tensor:
    """A zero that stays in the graph (so every parameter still gets a gradient)."""
    return (cam * 0).sum()


def factual_map_distance(
    cam: torch.Tensor, target: torch.Tensor, factual: torch.Tensor
) -> torch.Tensor:
    """Mean absolute error ``|cam - target|`` over every cell of the samples that have a factual
    cell (a sample annotated only with counterfactual regions has no positive map to match)."""
    rows = factual.flatten(1).sum(dim=1) > 0
    if not bool(rows.any()):
        return _zero(cam)
    return (cam[rows] - target[rows]).abs().mean()


def scale_to_peak(maps: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each map of [B, h, w] divided by its maximum (+ eps): an area-averaged positive map whose
    region covers no cell wholly peaks at 1 again, like the min-max normalised CAM it is compared
    with (the original GRADIA code does the same after its area resize)."""
    peak = maps.flatten(1).max(dim=1).values.view(-1, *([1] * (maps.ndim - 1)))
    return maps / (peak + eps)


def gradia_loss(cam: torch.Tensor, factual: torch.Tensor) -> torch.Tensor:
    """GRADIA: mean absolute error between the CAM and the positive (factual) map, the latter
    scaled to peak at 1 (:func:`scale_to_peak`)."""
    return factual_map_distance(cam, scale_to_peak(factual), factual)


def haics_loss(
    cam: torch.Tensor, factual: torch.Tensor, counterfactual: torch.Tensor
) -> torch.Tensor:
    """HAICS: binary cross-entropy of the CAM against the positive map, on annotated cells only.

    Each annotated pixel counts once: ``sum(f BCE(A, 1) + c BCE(A, 0)) / sum(f + c)``, i.e. a BCE to
    ``f / (f + c)`` weighted by the annotated area ``f + c`` of the cell.
    """
    annotated = factual + counterfactual
    total = annotated.sum()
    if float(total) == 0.0:
        return _zero(cam)
    target = factual / annotated.clamp_min(1e-12)
    bce = F.binary_cross_entropy(cam.clamp(0.0, 1.0), target.clamp(0.0, 1.0), reduction="none")
    return (annotated * bce).sum() / total


@torch.no_grad()
def robust_threshold(
    cam: torch.Tensor, factual: torch.Tensor, counterfactual: torch.Tensor, eps: float = 1e-4
) -> torch.Tensor:
    """The batch threshold ``a`` of RES's robust term (the reference's brute-force solver).

    ``a`` maximises the (area-weighted) fraction of counterfactual cells below it plus the fraction
    of factual cells at or above it. Candidates are every counterfactual value plus ``eps`` and every
    factual value, in that order; the first best wins. Zero when nothing is annotated. Not
    differentiable: the loss treats ``a`` as a constant.
    """
    values = cam.detach().flatten()
    wf, wc = factual.flatten(), counterfactual.flatten()
    fact_v, fact_w = values[wf > 0], wf[wf > 0]
    count_v, count_w = values[wc > 0], wc[wc > 0]
    candidates = torch.cat([count_v + eps, fact_v])
    if candidates.numel() == 0:
        return values.new_zeros(())

    def weight_below(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Total weight of the values strictly below each candidate."""
        if v.numel() == 0:
            return candidates.new_zeros(candidates.shape)
        order = torch.argsort(v)
        cumulative = torch.cat([w.new_zeros(1), w[order].cumsum(0)])
        return cumulative[torch.searchsorted(v[order].contiguous(), candidates, side="left")]

    score = candidates.new_zeros(candidates.shape)
    if count_v.numel():
        score = score + weight_below(count_v, count_w) / count_w.sum()
    if fact_v.numel():
        score = score + (fact_w.sum() - weight_below(fact_v, fact_w)) / fact_w.sum()
    # The first best, where scores equal up to float rounding of the fractions count as equal.
    first_best = torch.nonzero(score >= score.max() - 1e-6)[0, 0]
    return candidates[first_best]


def robust_loss(
    cam: torch.Tensor,
    factual: torch.Tensor,
    counterfactual: torch.Tensor,
    threshold: torch.Tensor | float,
    eta: float = 0.0,
    sharpness: float = 5.0,
) -> torch.Tensor:
    """RES's robust term: factual cells should sit above ``threshold``, counterfactual ones below.

    ``t = tanh(sharpness (A - a))``; ``L = relu(sum(f |t - 1| + c |t + 1|) / sum(f + c) - eta)``.
    Unknown cells do not count; ``eta`` is the tolerance.
    """
    total = (factual + counterfactual).sum()
    if float(total) == 0.0:
        return _zero(cam)
    t = torch.tanh(sharpness * (cam - threshold))
    per_cell = factual * (t - 1).abs() + counterfactual * (t + 1).abs()
    return torch.relu(per_cell.sum() / total - eta)


#: OpenCV's fixed kernels for ``sigma <= 0`` and sizes up to 7 (``cv2.getGaussianKernel``).
_OPENCV_SMALL_GAUSSIANS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def gaussian_kernel(kernel_size: int = 3, sigma: float | None = None) -> torch.Tensor:
    """A normalised 2-D Gaussian [k, k], separable. ``sigma=None`` is what the reference code's
    ``cv2.GaussianBlur(x, (k, k), 0)`` uses: OpenCV's fixed kernel for k <= 7 (``[1, 2, 1] / 4``
    for k = 3), else ``sigma = 0.3 ((k - 1) / 2 - 1) + 0.8``."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if sigma is None and kernel_size in _OPENCV_SMALL_GAUSSIANS:
        g = torch.tensor(_OPENCV_SMALL_GAUSSIANS[kernel_size], dtype=torch.float32)
    else:
        if sigma is None:
            sigma = 0.3 * ((kernel_size - 1) / 2 - 1) + 0.8
        x = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        g = torch.exp(-(x**2) / (2 * sigma**2))
        g = g / g.sum()
    return g[:, None] * g[None, :]


def smoothed_factual_map(
    factual: torch.Tensor, kernel_size: int = 3, sigma: float | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """RES-G's target: the positive map blurred by a Gaussian (borders reflected without repeating
    the edge, OpenCV's default) and divided by its maximum (+ eps) per sample."""
    kernel = gaussian_kernel(kernel_size, sigma).to(factual)
    pad = kernel_size // 2
    maps = factual[:, None]
    if pad and min(maps.shape[-2:]) > pad:
        maps = F.pad(maps, (pad, pad, pad, pad), mode="reflect")
    else:
        maps = F.pad(maps, (pad, pad, pad, pad), mode="replicate")
    blurred = F.conv2d(maps, kernel[None, None])[:, 0]
    return scale_to_peak(blurred, eps)


def res_g_loss(
    cam: torch.Tensor,
    factual: torch.Tensor,
    counterfactual: torch.Tensor,
    eta: float = 0.0,
    sharpness: float = 5.0,
    kernel_size: int = 3,
    sigma: float | None = None,
) -> torch.Tensor:
    """RES-G: the robust term plus the mean absolute error to the Gaussian-smoothed positive map."""
    threshold = robust_threshold(cam, factual, counterfactual)
    robust = robust_loss(cam, factual, counterfactual, threshold, eta, sharpness)
    target = smoothed_factual_map(factual, kernel_size, sigma)
    return robust + factual_map_distance(cam, target, factual)


class FactualImputation(nn.Module):
    """RES-L's learned imputation of the incomplete positive map (the reference's shallow "S1").

    One strided convolution, kernel ``2 s``, stride ``s``, padding ``s / 2`` (``s`` the CAM's
    feature stride: 64 / 32 / 16 on ResNet's 224-pixel input), maps the full-resolution factual mask
    [B, H, W] to a map at about the CAM's size; that map is resized to the CAM if needed and min-max
    normalised per sample. It is trained together with the network.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        if stride < 1:
            raise ValueError(f"imputation stride must be >= 1, got {stride}")
        self.conv = nn.Conv2d(1, 1, kernel_size=2 * stride, stride=stride, padding=stride // 2)

    def forward(self, factual_mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        imputed = self.conv(factual_mask[:, None].to(self.conv.weight.dtype))
        if tuple(imputed.shape[-2:]) != tuple(size):
            imputed = F.interpolate(imputed, size=size, mode="bilinear", align_corners=False)
        flat = imputed.flatten(1)
        flat = flat - flat.min(dim=1, keepdim=True).values
        flat = flat / (flat.max(dim=1, keepdim=True).values + 1e-6)
        return flat.view(-1, *size)


def res_l_loss(
    cam: torch.Tensor,
    factual: torch.Tensor,
    counterfactual: torch.Tensor,
    imputed: torch.Tensor,
    eta: float = 0.0,
    sharpness: float = 5.0,
    imputation_reg: float = 0.0,
) -> torch.Tensor:
    """RES-L: the robust term plus the mean absolute error to the learned imputation ``imputed``
    [B, h, w], plus ``imputation_reg`` times the squared error of the imputation to the positive
    map (the reference's optional regulariser, off by default)."""
    threshold = robust_threshold(cam, factual, counterfactual)
    loss = robust_loss(cam, factual, counterfactual, threshold, eta, sharpness)
    loss = loss + factual_map_distance(cam, imputed, factual)
    if imputation_reg:
        rows = factual.flatten(1).sum(dim=1) > 0
        if bool(rows.any()):
            loss = loss + imputation_reg * F.mse_loss(imputed[rows], factual[rows])
    return loss


def attention_kl_loss(
    cam: torch.Tensor, target_map: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Learning to Look's alignment term ``KL(P || Q)``, averaged over samples.

    ``P`` is the target map [B, h, w] (non-negative, at the CAM's resolution) as a distribution
    over cells, ``map / sum(map)``; ``Q = softmax(cam)`` over cells, ``cam`` the normalised CAM
    [B, h, w]. Zero exactly when ``softmax(cam) == P``. Samples whose map is all zero carry no
    distribution and are left out (the loss is 0 when none is left).
    """
    target = target_map.flatten(1)
    mass = target.sum(dim=1)
    keep = mass > eps
    if not bool(keep.any()):
        return cam.sum() * 0
    p = target[keep] / mass[keep, None]
    log_q = F.log_softmax(cam.flatten(1)[keep], dim=1)
    return (torch.xlogy(p, p) - p * log_q).sum(dim=1).mean()
