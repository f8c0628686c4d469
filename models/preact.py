"""Pre-activation ResNets for CIFAR-size inputs (He et al., "Identity Mappings", 2016) and WRN-28-10.

BN → ReLU → conv inside each block; the identity path carries the signal untouched, which is
what lets the 1001-layer net train.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register


class PreActBasicBlock(nn.Module):
    """Two pre-activated 3×3 convs; the Wide ResNet block (Zagoruyko & Komodakis, 2016)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, planes, 1, stride, bias=False) if stride != 1 or cin != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActBottleneck(nn.Module):
    """Pre-activated 1×1 → 3×3 → 1×1, output 4× the planes."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + skip


class PreActResNet(nn.Module):
    """CIFAR layout: 3×3 stem, three stages at strides 1, 2, 2, final BN-ReLU, GAP, linear."""

    def __init__(
        self,
        block: type[PreActBasicBlock] | type[PreActBottleneck],
        blocks_per_stage: int,
        widths: tuple[int, int, int],
        num_classes: int = 10,
        stem_width: int = 16,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_width, 3, padding=1, bias=False)
        cin, stages = stem_width, []
        for i, planes in enumerate(widths):
            layers = []
            for j in range(blocks_per_stage):
                layers.append(block(cin, planes, stride=2 if i > 0 and j == 0 else 1))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(cin)
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes)
        self.feature_stride = 4
        self.min_input_size = 4
        self.default_input_size = 32
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return F.relu(self.bn(x))

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean((2, 3)))


def _preact_bottleneck(depth: int, **kw) -> PreActResNet:
    if (depth - 2) % 9:
        raise ValueError("pre-activation bottleneck depth must be 9n + 2 (164, 1001, ...)")
    return PreActResNet(PreActBottleneck, (depth - 2) // 9, (16, 32, 64), **kw)


@register
def preact_resnet164(**kw) -> PreActResNet:
    return _preact_bottleneck(164, **kw)


@register
def preact_resnet1001(**kw) -> PreActResNet:
    """The 1001-layer bottleneck net of "Identity Mappings in Deep Residual Networks"."""
    return _preact_bottleneck(1001, **kw)


@register
def wrn28_10(**kw) -> PreActResNet:
    """CIFAR Wide ResNet-28-10: four pre-activated basic blocks per stage, widths 160/320/640."""
    return PreActResNet(PreActBasicBlock, 4, (160, 320, 640), **kw)
