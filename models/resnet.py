"""ResNet, ResNeXt, Wide ResNet, ResNet-D and plain (no-skip) nets with torchvision's names and keys.

One configurable ``ResNet`` covers the family; the builders at the bottom are three lines each.
"""

from functools import partial

import torch
from torch import nn

from .registry import register


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34); ``residual=False`` gives the plain counterpart."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (stride here, torchvision "v1.5"; groups = cardinality) → 1×1 expand."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        residual: bool = True,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


class Standardize(nn.Module):
    """Per-image, per-channel zero mean and unit variance: ``InstanceNorm2d`` without parameters.

    Means are taken over rows, then over columns: onnxruntime sums naively, and a single sum over
    a megapixel loses digits that torch's cascaded sum keeps.
    """

    @staticmethod
    def _mean(x: torch.Tensor) -> torch.Tensor:
        return x.mean(3, keepdim=True).mean(2, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - self._mean(x)
        return x * torch.rsqrt(self._mean(x * x) + 1e-5)


class ResNet(nn.Module):
    """ImageNet ResNet: 7×7 stem, four stages, global average pooling, linear head.

    ``avg_down`` uses the ResNet-D projection shortcut (2×2 average pool, then a stride-1 1×1 conv);
    ``residual=False`` removes every skip connection (the "plain" nets of He et al.);
    ``stem_pool=False`` drops the max-pool (total stride 16, finer activation maps);
    ``widths`` sets the per-stage planes for narrow variants;
    ``input_norm`` standardises each image per channel first (instance norm), which makes a net
    trained from scratch indifferent to the colours of object and background.
    """

    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        groups: int = 1,
        width_per_group: int = 64,
        avg_down: bool = False,
        residual: bool = True,
        stem_pool: bool = True,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        in_chans: int = 3,
        input_norm: bool = False,
    ) -> None:
        super().__init__()
        self.groups, self.base_width = groups, width_per_group
        self.avg_down, self.residual = avg_down, residual
        self.inplanes = widths[0]
        self.input_norm = Standardize() if input_norm else nn.Identity()
        self.conv1 = nn.Conv2d(in_chans, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem_pool else nn.Identity()
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = widths[3] * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        self.feature_stride = 32 if stem_pool else 16
        self.min_input_size = self.feature_stride
        self.default_input_size = 224
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        out_planes = planes * block.expansion
        if self.residual and (stride != 1 or self.inplanes != out_planes):
            if self.avg_down and stride != 1:
                downsample = nn.Sequential(
                    nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False),
                    conv1x1(self.inplanes, out_planes),
                    nn.BatchNorm2d(out_planes),
                )
            else:
                downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        common = dict(groups=self.groups, base_width=self.base_width, residual=self.residual)
        layers = [block(self.inplanes, planes, stride, downsample, **common)]
        self.inplanes = out_planes
        layers += [block(self.inplanes, planes, **common) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map (B, C, H/stride, W/stride): what class activation maps are made of."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.input_norm(x)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def get_classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


_basic = partial(ResNet, BasicBlock)
_bottleneck = partial(ResNet, Bottleneck)


@register
def resnet18(**kw) -> ResNet:
    return _basic([2, 2, 2, 2], **kw)


@register
def resnet34(**kw) -> ResNet:
    return _basic([3, 4, 6, 3], **kw)


@register
def resnet50(**kw) -> ResNet:
    return _bottleneck([3, 4, 6, 3], **kw)


@register
def resnet101(**kw) -> ResNet:
    return _bottleneck([3, 4, 23, 3], **kw)


@register
def resnet152(**kw) -> ResNet:
    return _bottleneck([3, 8, 36, 3], **kw)


@register
def resnext50_32x4d(**kw) -> ResNet:
    return _bottleneck([3, 4, 6, 3], groups=32, width_per_group=4, **kw)


@register
def resnext101_32x8d(**kw) -> ResNet:
    return _bottleneck([3, 4, 23, 3], groups=32, width_per_group=8, **kw)


@register
def resnext101_64x4d(**kw) -> ResNet:
    return _bottleneck([3, 4, 23, 3], groups=64, width_per_group=4, **kw)


@register
def wide_resnet50_2(**kw) -> ResNet:
    return _bottleneck([3, 4, 6, 3], width_per_group=128, **kw)


@register
def wide_resnet101_2(**kw) -> ResNet:
    return _bottleneck([3, 4, 23, 3], width_per_group=128, **kw)


@register
def resnet50d(**kw) -> ResNet:
    """ResNet-50 with the ResNet-D projection shortcut (torchvision stem, not the deep stem)."""
    return _bottleneck([3, 4, 6, 3], avg_down=True, **kw)


@register
def plain18(**kw) -> ResNet:
    """ResNet-18 without skip connections, for comparison."""
    return _basic([2, 2, 2, 2], residual=False, **kw)


@register
def plain34(**kw) -> ResNet:
    """ResNet-34 without skip connections, for comparison."""
    return _basic([3, 4, 6, 3], residual=False, **kw)


@register
def resnet10_shapes(**kw) -> ResNet:
    """Narrow ResNet-10 (stride 16) behind the embedded default model; see models/train_shapes.py."""
    model = _basic([1, 1, 1, 1], widths=(16, 32, 64, 128), stem_pool=False, input_norm=True, **kw)
    model.default_input_size = 112
    return model
