"""The detector: EfficientNet-Lite0 (backbone.py), a small two-scale neck and a YOLOv2 output, and its loss.

    net = Detector(load_backbone(), tags=2, anchors=anchors)   # anchors [A, 2] in grid cells
    grid = net(images)         # [N, A * (5 + tags), S/16, S/16]: the runtime's `model_outputs0`
    loss = yolo_loss(grid, targets, anchors)

The trunk (stem and blocks 0-10, up to stride 16) stays frozen with its ImageNet weights;
blocks 11-15 and the 1x1 head conv (stride 32) are fine-tuned. The neck brings the stride-32
features up to stride 16 and joins them with the trunk's own (a feature pyramid's top two
levels), so the grid has a cell every 16 pixels for smaller objects while each cell sees the
whole picture. The output is decoded as the runtime decodes a Custom Vision compact export
(edge_runtime/model/postprocess.py): centre = (sigmoid(t0, t1) + cell) / grid, size =
exp(t2, t3) * anchor / grid, probability = softmax(classes) * sigmoid(t4).

The loss is YOLOv2's: each box is given to the cell holding its centre and the anchor whose
shape fits it best; binary cross-entropy on the centre offsets and the objectness, squared
error on the log sizes (weighted 2 - area, so small boxes count as much as large ones), and
cross-entropy on the tag. Anchors whose prediction already overlaps a box by IoU 0.6 or more
are not pushed towards "nothing" (YOLOv2's ignore rule).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .backbone import C4_BLOCK, C4_CHANNELS, C5_CHANNELS, EfficientNetLite0, SameConv

STRIDE = 16
NECK = 128
OBJECTNESS_PRIOR = 0.01  # the output's bias starts at "nothing here" with this probability
IGNORE_IOU = 0.6
SECOND_ANCHOR_IOU = 0.6  # a box also trains every other anchor of its cell whose shape fits it this well
POSITIVE_WEIGHT = 4.0  # objectness of the few anchors that hold a box, against the many that do not


class Detector(nn.Module):
    def __init__(self, backbone: EfficientNetLite0, tags: int, anchors: np.ndarray) -> None:
        super().__init__()
        self.backbone = backbone
        self.tags, self.anchors = tags, len(anchors)
        half = NECK // 2 + NECK // 4
        self.reduce5 = SameConv(C5_CHANNELS, half, 1)
        self.reduce4 = SameConv(C4_CHANNELS, half, 1)
        self.neck = nn.Sequential(
            SameConv(2 * half, 2 * half, 5, groups=2 * half), SameConv(2 * half, NECK, 1),
            SameConv(NECK, NECK, 3, groups=NECK), SameConv(NECK, NECK, 1),
        )
        self.out = nn.Conv2d(NECK, self.anchors * (5 + tags), 1)
        with torch.no_grad():
            assert self.out.bias is not None
            bias = self.out.bias.view(self.anchors, 5 + tags)
            bias.zero_()
            bias[:, 4] = math.log(OBJECTNESS_PRIOR / (1 - OBJECTNESS_PRIOR))
            self.out.weight.mul_(0.1)
        for module in (backbone.stem, *backbone.blocks[: C4_BLOCK + 1]):
            module.requires_grad_(False)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part: stride-16 features."""
        x = self.backbone.stem(x)
        for block in self.backbone.blocks[: C4_BLOCK + 1]:
            x = block(x)
        return x

    def top(self, c4: torch.Tensor) -> torch.Tensor:
        """What is trained: the last blocks, the neck and the output, from the trunk's features."""
        x = c4
        for block in self.backbone.blocks[C4_BLOCK + 1 :]:
            x = block(x)
        c5 = self.backbone.head(x)
        up = F.interpolate(self.reduce5(c5), size=c4.shape[2:], mode="nearest")
        grid: torch.Tensor = self.out(self.neck(torch.cat([up, self.reduce4(c4)], dim=1)))
        return grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(x))

    def trained(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def _iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, 4] x [M, 4] -> [N, M]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    iou: torch.Tensor = inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)
    return iou


def yolo_loss(grid: torch.Tensor, targets: Sequence[tuple[np.ndarray, np.ndarray]],
              anchors: np.ndarray) -> torch.Tensor:
    """`targets`: per image, boxes [N, 4] (x0, y0, x1, y1, normalised) and tag indices [N]."""
    n, channels, gh, gw = grid.shape
    a = len(anchors)
    p = grid.view(n, a, channels // a, gh, gw).permute(0, 1, 3, 4, 2)  # [n, a, gh, gw, 5 + C]
    anchor_t = torch.as_tensor(anchors, dtype=torch.float32)
    cols = torch.arange(gw, dtype=torch.float32).view(1, 1, 1, gw)
    rows = torch.arange(gh, dtype=torch.float32).view(1, 1, gh, 1)
    with torch.no_grad():  # the predicted boxes, for the ignore rule
        cx = (torch.sigmoid(p[..., 0]) + cols) / gw
        cy = (torch.sigmoid(p[..., 1]) + rows) / gh
        w = torch.exp(p[..., 2].clamp(max=8)) * anchor_t[:, 0].view(1, a, 1, 1) / gw
        h = torch.exp(p[..., 3].clamp(max=8)) * anchor_t[:, 1].view(1, a, 1, 1) / gh
        predicted = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    positive = torch.zeros(n, a, gh, gw, dtype=torch.bool)
    ignore = torch.zeros_like(positive)
    txy = torch.zeros(n, a, gh, gw, 2)
    twh = torch.zeros(n, a, gh, gw, 2)
    weight = torch.zeros(n, a, gh, gw)
    tcls = torch.zeros(n, a, gh, gw, dtype=torch.long)
    from .augment import shape_iou

    for i, (boxes, classes) in enumerate(targets):
        if not len(boxes):
            continue
        b = torch.as_tensor(boxes, dtype=torch.float32)
        ignore[i] = _iou_xyxy(predicted[i].reshape(-1, 4), b).max(1).values.view(a, gh, gw) >= IGNORE_IOU
        sizes = np.stack([(boxes[:, 2] - boxes[:, 0]) * gw, (boxes[:, 3] - boxes[:, 1]) * gh], axis=1)
        fits = shape_iou(sizes, anchors)
        for k in range(len(boxes)):
            x, y = (boxes[k, 0] + boxes[k, 2]) / 2 * gw, (boxes[k, 1] + boxes[k, 3]) / 2 * gh
            col, row = min(int(x), gw - 1), min(int(y), gh - 1)
            for j in {int(fits[k].argmax()), *np.flatnonzero(fits[k] >= SECOND_ANCHOR_IOU).tolist()}:
                positive[i, j, row, col] = True
                txy[i, j, row, col] = torch.tensor([x - col, y - row])
                twh[i, j, row, col] = torch.tensor(np.log(np.maximum(sizes[k], 1e-6) / anchors[j]))
                weight[i, j, row, col] = 2.0 - float((boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1]))
                tcls[i, j, row, col] = int(classes[k])
    objectness = p[..., 4]
    negative = ~positive & ~ignore
    loss = F.binary_cross_entropy_with_logits(objectness[negative], torch.zeros_like(objectness[negative]),
                                              reduction="sum")
    if positive.any():
        pos = p[positive]
        w_pos = weight[positive]
        loss = loss + POSITIVE_WEIGHT * F.binary_cross_entropy_with_logits(pos[:, 4], torch.ones_like(pos[:, 4]),
                                                                           reduction="sum")
        xy = F.binary_cross_entropy_with_logits(pos[:, :2], txy[positive], reduction="none").sum(1)
        wh = ((pos[:, 2:4] - twh[positive]) ** 2).sum(1)
        loss = loss + (w_pos * (xy + wh)).sum()
        loss = loss + F.cross_entropy(pos[:, 5:], tcls[positive], reduction="sum")
    return loss / n
