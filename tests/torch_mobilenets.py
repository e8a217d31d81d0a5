"""MobileNetV2, MobileNetV3-small, an EfficientNet-Lite-style block and a small FPN/UNet-style head, built with
torch from their published architectures (no downloads, random weights), for the ONNX Runtime bit-exactness
tests of the real-network op set. `width` scales the channels so the tests stay fast.

- MobileNetV2: Sandler et al., CVPR 2018, Table 2 (inverted residuals, ReLU6, linear bottlenecks).
- MobileNetV3-small: Howard et al., ICCV 2019, Table 2 (SE with hard-sigmoid gating, HardSwish, ReLU).
- EfficientNet-Lite: the EfficientNet MBConv block (Tan & Le, ICML 2019) with Swish (x * sigmoid(x)) and SE;
  efficientnet_lite_block_mean squeezes with x.mean((2, 3), keepdim=True) as timm does (ReduceMean).
- The head: lateral 1x1 convs, nearest and bilinear Resize upsampling, a ConvTranspose, skip additions.
"""

from __future__ import annotations

import torch
from torch import nn


def _div(v, d=8):
    return max(d, int(v + d / 2) // d * d)


def conv_bn(ci, co, k, s, groups=1, act=None):
    layers = [nn.Conv2d(ci, co, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(co)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, ci, co, stride, expand):
        super().__init__()
        hidden = ci * expand
        layers = [] if expand == 1 else [conv_bn(ci, hidden, 1, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, co, 1, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and ci == co

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(num_classes=10, width=0.25):
    # t (expansion), c (channels), n (repeats), s (stride): Sandler et al., Table 2
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]
    ci = _div(32 * width)
    layers = [conv_bn(3, ci, 3, 2, act=nn.ReLU6)]
    for t, c, n, s in settings:
        co = _div(c * width)
        for i in range(n):
            layers.append(InvertedResidual(ci, co, s if i == 0 else 1, t))
            ci = co
    last = _div(1280 * max(1.0, width))
    layers.append(conv_bn(ci, last, 1, 1, act=nn.ReLU6))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(last, num_classes))


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze, gate=nn.Hardsigmoid, act=nn.ReLU):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.act = nn.Conv2d(c, squeeze, 1), act()
        self.fc2, self.gate = nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class V3Block(nn.Module):
    def __init__(self, ci, k, exp, co, se, act, stride):
        super().__init__()
        layers = [] if exp == ci else [conv_bn(ci, exp, 1, 1, act=act)]
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, _div(exp // 4)))
        layers.append(conv_bn(exp, co, 1, 1))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and ci == co

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v3_small(num_classes=10, width=0.5):
    hs, re = nn.Hardswish, nn.ReLU
    # kernel, expansion, out channels, SE, activation, stride: Howard et al., Table 2
    settings = [(3, 16, 16, True, re, 2), (3, 72, 24, False, re, 2), (3, 88, 24, False, re, 1),
                (5, 96, 40, True, hs, 2), (5, 240, 40, True, hs, 1), (5, 240, 40, True, hs, 1),
                (5, 120, 48, True, hs, 1), (5, 144, 48, True, hs, 1), (5, 288, 96, True, hs, 2),
                (5, 576, 96, True, hs, 1), (5, 576, 96, True, hs, 1)]
    ci = _div(16 * width)
    layers = [conv_bn(3, ci, 3, 2, act=hs)]
    for k, exp, c, se, act, s in settings:
        co = _div(c * width)
        layers.append(V3Block(ci, k, _div(exp * width), co, se, act, s))
        ci = co
    last = _div(576 * width)
    layers.append(conv_bn(ci, last, 1, 1, act=hs))
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, 128), nn.Hardswish(), nn.Dropout(0.2),
            nn.Linear(128, num_classes)]
    return nn.Sequential(*layers, *head)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


def efficientnet_lite_block(c=16, expand=4, num_classes=10):
    """Stem, one MBConv with Swish and a sigmoid-gated SE, a SiLU head (nn.SiLU exports as Sigmoid * x)."""
    hidden = c * expand
    stem = conv_bn(3, c, 3, 2, act=Swish)
    block = nn.Sequential(conv_bn(c, hidden, 1, 1, act=Swish), conv_bn(hidden, hidden, 3, 1, groups=hidden,
                                                                         act=Swish),
                          SqueezeExcite(hidden, c // 2, gate=nn.Sigmoid, act=Swish), conv_bn(hidden, c, 1, 1))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.block = stem, block
            self.head = nn.Sequential(conv_bn(c, 64, 1, 1, act=nn.SiLU), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(64, num_classes))

        def forward(self, x):
            x = self.stem(x)
            return self.head(x + self.block(x))
    return Net()


class MeanSqueezeExcite(nn.Module):
    """timm / EfficientNet-Lite's SE: the squeeze is x.mean((2, 3), keepdim=True), exported as ReduceMean."""

    def __init__(self, c, squeeze, gate=nn.Sigmoid, act=nn.ReLU):
        super().__init__()
        self.fc1, self.act = nn.Conv2d(c, squeeze, 1), act()
        self.fc2, self.gate = nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


def efficientnet_lite_block_mean(c=16, expand=4, num_classes=10):
    """efficientnet_lite_block with the SE squeeze written as x.mean((2, 3), keepdim=True) (ReduceMean)."""
    net = efficientnet_lite_block(c, expand, num_classes)
    se = net.block[2]
    net.block[2] = MeanSqueezeExcite(c * expand, c // 2, gate=nn.Sigmoid, act=Swish)
    net.block[2].load_state_dict(se.state_dict())
    return net


class FpnHead(nn.Module):
    """A backbone of strided convs, an FPN-style top-down path with nearest / bilinear Resize and a
    ConvTranspose, and a segmentation output."""

    def __init__(self, c=8, classes=3):
        super().__init__()
        self.c1 = conv_bn(3, c, 3, 2, act=nn.ReLU)
        self.c2 = conv_bn(c, 2 * c, 3, 2, act=nn.ReLU)
        self.c3 = conv_bn(2 * c, 4 * c, 3, 2, act=nn.ReLU)
        self.l3, self.l2, self.l1 = nn.Conv2d(4 * c, c, 1), nn.Conv2d(2 * c, c, 1), nn.Conv2d(c, c, 1)
        self.up = nn.ConvTranspose2d(c, c, 2, 2)
        self.out = nn.Conv2d(c, classes, 3, padding=1)

    def forward(self, x):
        f1 = self.c1(x)
        f2 = self.c2(f1)
        f3 = self.c3(f2)
        p3 = self.l3(f3)
        p2 = self.l2(f2) + nn.functional.interpolate(p3, scale_factor=2, mode="nearest")
        p1 = self.l1(f1) + nn.functional.interpolate(p2, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(torch.relu(self.up(p1)))


def init_batchnorm(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affines (freshly built networks have the identity), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return net.eval()
