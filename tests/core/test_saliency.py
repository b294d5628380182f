"""Grad-CAM, CAM and the explanation metrics, on tiny tensors and a tiny backbone."""

from __future__ import annotations

import pytest
import torch

from vapl.core.backbones import build_backbone
from vapl.core.metrics import (
    explanation_present,
    explanation_scores,
    pointing_game,
    saliency_iou,
)
from vapl.core.saliency import (
    class_activation_map,
    feature_map_and_logits,
    feature_stride,
    grad_cam,
    normalize_cam,
    split_classifier,
    upsample_cam,
)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    model = build_backbone("tiny", num_classes=3, in_channels=1).to(dtype)
    return model.eval()  # batch norm with fixed statistics: samples are independent


@pytest.mark.parametrize("layer", [-1, 4])
def test_grad_cam_matches_finite_differences(layer):
    """alpha_c = mean_hw dy_k/dF_c is the derivative of y_k along the all-ones direction on
    channel c, divided by h * w: one central difference per channel."""
    model = tiny_model(dtype=torch.float64)
    images = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    targets = torch.tensor([2, 0])
    cam, _ = grad_cam(model, images, targets, layer=layer)

    front, head = split_classifier(model, layer)
    with torch.no_grad():
        feature_map = front(images)
        _, channels, h, w = feature_map.shape
        step = 1e-6
        expected = torch.zeros(2, h, w, dtype=torch.float64)
        for c in range(channels):
            direction = torch.zeros_like(feature_map)
            direction[:, c] = 1.0
            up = head(feature_map + step * direction).gather(1, targets[:, None])[:, 0]
            down = head(feature_map - step * direction).gather(1, targets[:, None])[:, 0]
            alpha = (up - down) / (2 * step) / (h * w)
            expected += alpha[:, None, None] * feature_map[:, c]
    torch.testing.assert_close(cam.detach(), expected, rtol=1e-5, atol=1e-7)


def test_grad_cam_is_differentiable_to_second_order():
    """create_graph=True: the CAM (channel weights included) has correct input gradients."""
    model = tiny_model(dtype=torch.float64)
    images = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1])

    def cam_of(x: torch.Tensor) -> torch.Tensor:
        return grad_cam(model, x, targets, layer=-1, create_graph=True)[0]

    assert torch.autograd.gradcheck(cam_of, (images,), eps=1e-6, atol=1e-5)


def test_first_order_cam_keeps_only_the_feature_map_path():
    model = tiny_model(dtype=torch.float64)
    images = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    first, _ = grad_cam(model, images, torch.tensor([0, 1]), create_graph=False)
    second, _ = grad_cam(model, images, torch.tensor([0, 1]), create_graph=True)
    torch.testing.assert_close(first, second)  # same values, different graphs
    weight = model.fc.weight
    (g_first,) = torch.autograd.grad(first.sum(), weight, allow_unused=True)
    (g_second,) = torch.autograd.grad(second.sum(), weight)
    assert g_first is None  # the FC layer only enters through the (constant) channel weights
    assert g_second.abs().sum() > 0


def test_grad_cam_of_a_gap_head_is_cam_over_area():
    model = tiny_model()
    images = torch.randn(3, 1, 16, 16)
    targets = torch.tensor([0, 1, 2])
    gradcam, logits = grad_cam(model, images, targets)
    cam, cam_logits = class_activation_map(model, images, targets)
    h, w = cam.shape[-2:]
    torch.testing.assert_close(gradcam, cam / (h * w), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits, cam_logits)


def test_grad_cam_defaults_to_the_predicted_class():
    model = tiny_model()
    images = torch.randn(2, 1, 16, 16)
    cam, logits = grad_cam(model, images)
    expected, _ = grad_cam(model, images, logits.argmax(1))
    torch.testing.assert_close(cam, expected)


def test_grad_cam_needs_gradients_and_a_valid_layer():
    model = tiny_model()
    with torch.no_grad(), pytest.raises(RuntimeError, match="enable_grad"):
        grad_cam(model, torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="out of range"):
        split_classifier(model, 99)


def test_feature_map_of_a_frozen_model_still_has_gradients():
    model = tiny_model()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    feature_map, logits = feature_map_and_logits(model, torch.randn(1, 1, 8, 8))
    assert feature_map.requires_grad and logits.requires_grad


def test_normalize_cam_values():
    cam = torch.tensor([[[1.0, 3.0], [2.0, 5.0]]])
    torch.testing.assert_close(
        normalize_cam(cam, "minmax", eps=0.0), torch.tensor([[[0.0, 0.5], [0.25, 1.0]]])
    )
    signed = torch.tensor([[[-1.0, 2.0], [1.0, 4.0]]])
    torch.testing.assert_close(
        normalize_cam(signed, "relu", eps=0.0), torch.tensor([[[0.0, 0.5], [0.25, 1.0]]])
    )
    # Learning to Look's reference: ReLU, then min-max (the negative cell and the zero cell tie)
    torch.testing.assert_close(
        normalize_cam(signed, "relu_minmax", eps=0.0),
        torch.tensor([[[0.0, 0.5], [0.25, 1.0]]]),
    )
    positive = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])  # ReLU changes nothing, min-max does
    torch.testing.assert_close(
        normalize_cam(positive, "relu_minmax"), torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])
    )
    mixed = torch.tensor([[[-2.0, -1.0], [1.0, 3.0]]])  # min-max alone keeps the negative order
    torch.testing.assert_close(
        normalize_cam(mixed, "relu_minmax", eps=0.0), torch.tensor([[[0.0, 0.0], [1 / 3, 1.0]]])
    )
    torch.testing.assert_close(
        normalize_cam(mixed, "minmax", eps=0.0), torch.tensor([[[0.0, 0.2], [0.6, 1.0]]])
    )
    constant = torch.full((1, 2, 2), 3.0)
    assert torch.equal(normalize_cam(constant), torch.zeros(1, 2, 2))  # no NaN
    with pytest.raises(ValueError, match="normalisation"):
        normalize_cam(cam, "softmax")


def test_upsample_and_feature_stride():
    cam = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    up = upsample_cam(cam, (4, 4))
    assert up.shape == (1, 4, 4)
    assert up[0, 0, 0] == 0.0 and up[0, 0, 3] == 1.0
    assert upsample_cam(cam, (2, 2)) is cam
    assert feature_stride(tiny_model(), in_channels=1) == 4
    assert feature_stride(tiny_model(), in_channels=1, layer=3) == 2


def test_iou_and_pointing_game_by_hand():
    saliency = torch.tensor([[[0.9, 0.6], [0.2, 0.1]], [[0.1, 0.2], [0.3, 0.8]]])
    explanation = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    # sample 0: predicted {(0,0), (0,1)}, truth {(0,0), (1,0)}: 1 / 3; sample 1: 0 / 3
    torch.testing.assert_close(saliency_iou(saliency, explanation), torch.tensor([1 / 3, 0.0]))
    torch.testing.assert_close(pointing_game(saliency, explanation), torch.tensor([1.0, 0.0]))
    assert explanation_present(torch.zeros(1, 2, 2)).tolist() == [False]


def test_explanation_scores_skip_empty_explanations_and_leave_inference_mode():
    model = tiny_model()
    images = torch.randn(3, 1, 16, 16)
    explanation = torch.zeros(3, 16, 16)
    explanation[0, 4:12, 4:12] = 1.0
    explanation[2, :, :8] = 1.0
    plain = explanation_scores(model, images, explanation)
    assert plain["iou"].shape == (2,) and plain["pointing"].shape == (2,)
    with torch.inference_mode():
        inference = explanation_scores(model, images.clone(), explanation.clone())
    with torch.no_grad():
        no_grad = explanation_scores(model, images, explanation)
    for name in ("iou", "pointing"):
        torch.testing.assert_close(inference[name], plain[name])
        torch.testing.assert_close(no_grad[name], plain[name])
    empty = explanation_scores(model, images, torch.zeros(3, 16, 16))
    assert empty["iou"].numel() == 0
