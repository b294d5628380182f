from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from vapl.core.backbones import build_backbone


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
def test_parts_compose_to_the_forward_pass(name, channels):
    model = build_backbone(name, num_classes=3, in_channels=channels).eval()
    x = torch.rand(2, channels, 32, 32)
    logits, features = model.forward_with_features(x)
    assert logits.shape == (2, 3) and features.shape == (2, model.num_features)
    assert torch.allclose(model(x), logits)
    assert torch.allclose(model.fc(model.feature_map(x).mean(dim=(2, 3))), logits, atol=1e-6)


def test_resnet18_weights_load_from_a_local_torchvision_file(tmp_path):
    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    rgb = build_backbone(
        "resnet18", num_classes=1000, in_channels=3, weights=tmp_path / "resnet18.pth"
    )
    assert torch.equal(rgb.body[0].weight, reference.conv1.weight)
    assert torch.equal(rgb.body[7][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(rgb.fc.weight, reference.fc.weight)  # same shape: the head is loaded too

    gray = build_backbone(
        "resnet18", num_classes=2, in_channels=1, weights=tmp_path / "resnet18.pth"
    )
    assert torch.allclose(gray.body[0].weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert gray.fc.weight.shape == (2, 512)  # a head of another size keeps its random init


def test_a_file_that_is_not_a_resnet18_state_dict_is_a_clear_error(tmp_path):
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a ResNet-18 state dict"):
        build_backbone("resnet18", weights=tmp_path / "other.pth")
    with pytest.raises(ValueError, match="cannot read"):
        build_backbone("resnet18", weights=tmp_path / "missing.pth")


def test_an_unknown_backbone_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="resnet18, tiny"):
        build_backbone("vgg")
