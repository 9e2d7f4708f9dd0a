"""What the review decision sees of a cell: a feature vector (RoIAlign of chosen detector layers over
the cell's box, averaged: the evidence the detector's own heads type it from) and the detector's
class logits for the box."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, roi_align

from wbc.attributes.head import FeatureTap

DEFAULT_LAYERS = (4, 6)  # the attribute head's layers (attribute_head/default.yaml): strides 8 and 16


class Evidence:
    """Hooks ``layers`` of a detector; after each forward pass :meth:`embed` gives boxes' feature vectors."""

    def __init__(self, detector: torch.nn.Module, layers=DEFAULT_LAYERS, roi_size: int = 7):
        self.layers, self.roi_size = list(layers), roi_size
        self.tap = FeatureTap(detector, self.layers)

    def embed(self, boxes: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """``boxes`` (K, 5) ``[batch index, x1, y1, x2, y2]`` in input pixels -> (K, sum of channels)."""
        s = self.roi_size
        return torch.cat([roi_align(f, boxes.to(f.dtype), (s, s), spatial_scale=f.shape[-1] / input_size[1], sampling_ratio=2,
                                    aligned=True).mean((2, 3)) for f in self.tap.features], 1).float()


def logits_of(scores: torch.Tensor) -> torch.Tensor:
    """The detector's sigmoid class scores -> logits (clamped away from 0 and 1)."""
    s = scores.float().clamp(1e-6, 1 - 1e-6)
    return s.log() - (-s).log1p()


def anchor_scores(predictions: torch.Tensor, boxes: torch.Tensor, min_iou: float = 0.6) -> torch.Tensor:
    """Class scores (K, nc) the detector gives each given box: those of its most confident prediction
    among the ones overlapping the box at IoU >= ``min_iou`` (else of the one overlapping most).
    ``predictions``: raw detector output (B, 4 + nc, anchors), xywh in input pixels; ``boxes`` (K, 5)
    as in :meth:`Evidence.embed`."""
    out = []
    for box in boxes:
        p = predictions[int(box[0])]
        xy, wh = p[:2].T, p[2:4].T
        iou = box_iou(box[None, 1:].to(p.dtype), torch.cat([xy - wh / 2, xy + wh / 2], 1))[0]
        near = iou >= min(min_iou, float(iou.max()))
        best = torch.where(near, p[4:].max(0).values, torch.full_like(iou, -1.0)).argmax()
        out.append(p[4:, best])

    return torch.stack(out) if out else predictions.new_zeros((0, predictions.shape[1] - 4))
