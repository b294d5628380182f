"""Classifier backbones split the way every method needs them.

A :class:`Classifier` is ``body`` (the convolutional stages, ending at the feature map that
Grad-CAM uses), global average pooling, and ``fc``. The feature extractor ``S`` of the paper's
co-activation loss is ``body`` followed by the pooling (:meth:`Classifier.features`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

BACKBONES = ("resnet18", "tiny", "tiny_gn")


class Classifier(nn.Module):
    """``fc(pool(body(x)))`` with each part reachable on its own."""

    def __init__(self, body: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.body = body
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(num_features, num_classes)
        self.num_features = num_features

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional stage's output [B, C, h, w]."""
        return self.body(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``S(x)``: the pooled features [B, C] that enter the FC layer."""
        return self.pool(self.body(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, K] and ``S(x)`` [B, C] from one pass."""
        features = self.features(x)
        return self.fc(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _tiny_body(in_channels: int, width: int = 16, group_norm: bool = False) -> nn.Sequential:
    """Three conv stages; ``group_norm`` swaps batch norm for group norm (4 groups), which
    normalises each sample on its own: results then do not depend on how a batch is split
    across DDP processes (exact multi-process tests on the CPU, where SyncBatchNorm is missing)."""

    def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.GroupNorm(4, cout) if group_norm else nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    return nn.Sequential(
        *stage(in_channels, width, True),
        *stage(width, 2 * width, True),
        *stage(2 * width, 4 * width, False),
    )


def _resnet18_body(in_channels: int) -> nn.Sequential:
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )


# torchvision's resnet18 state-dict names, by their index in our ``body``.
_RESNET_PREFIXES = ("conv1", "bn1", None, None, "layer1", "layer2", "layer3", "layer4")


def _load_resnet18_weights(model: Classifier, path: Path, in_channels: int) -> None:
    """Load a torchvision ResNet-18 state dict (a ``.pth`` file) into ``model``.

    The first convolution is adapted to ``in_channels`` (summed over RGB for one channel); the FC
    layer is loaded only when its shape matches ``num_classes``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as error:
        raise ValueError(f"{path}: cannot read ResNet-18 weights ({error})") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in _RESNET_PREFIXES:
            renamed[f"body.{_RESNET_PREFIXES.index(head)}.{rest}"] = value
        elif head == "fc" and value.shape == getattr(model.fc, rest).shape:
            renamed[key] = value
    conv1 = renamed.get("body.0.weight")
    if conv1 is not None and conv1.shape[1] != in_channels:
        if in_channels == 1:
            renamed["body.0.weight"] = conv1.sum(dim=1, keepdim=True)
        else:
            raise ValueError(
                f"{path}: first convolution has {conv1.shape[1]} input channels, "
                f"model has {in_channels}"
            )
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a ResNet-18 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def build_backbone(
    name: str = "resnet18",
    num_classes: int = 2,
    in_channels: int = 3,
    weights: str | Path | None = None,
) -> Classifier:
    """Build a backbone by name: ``resnet18`` (torchvision), ``tiny`` (a three-stage CNN for tests)
    or ``tiny_gn`` (the same with group norm instead of batch norm).

    ``weights`` is a local file; nothing is downloaded. Random initialisation by default.
    """
    if name == "resnet18":
        model = Classifier(_resnet18_body(in_channels), 512, num_classes)
        if weights is not None:
            _load_resnet18_weights(model, Path(weights), in_channels)
        return model
    if name in ("tiny", "tiny_gn"):
        model = Classifier(_tiny_body(in_channels, group_norm=name == "tiny_gn"), 64, num_classes)
        if weights is not None:
            model.load_state_dict(torch.load(Path(weights), map_location="cpu", weights_only=True))
        return model
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
