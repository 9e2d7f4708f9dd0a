"""What the review decision sees of a cell: a feature vector and the detector's class logits for the box.

The feature vector joins two views: RoIAlign of chosen detector layers over the cell's box, averaged
(what the cell looks like to the backbone), and the detector's classification branch at the anchor
that found the cell, just before its class logits (the type head's own feature space)."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, roi_align

from wbc.attributes.head import FeatureTap

DEFAULT_LAYERS = (4, 6)  # the attribute head's layers (attribute_head/default.yaml): strides 8 and 16


class Evidence:
    """Hooks ``layers`` of a detector and, with ``head``, the last hidden layer of its classification
    branch at every level (ultralytics' ``Detect.cv3[i][-2]``); after each forward pass :meth:`embed`
    gives the feature vectors of boxes."""

    def __init__(self, detector: torch.nn.Module, layers=DEFAULT_LAYERS, roi_size: int = 7, head: bool = True):
        self.layers, self.roi_size, self.head = list(layers), roi_size, head
        self.tap = FeatureTap(detector, self.layers)
        self.branch: list[torch.Tensor | None] = []
        if head:
            self.branch = [None] * len(branch_modules(detector))
            for i, module in enumerate(branch_modules(detector)):
                module.register_forward_hook(self._keep(i))

    def _keep(self, level: int):
        def hook(module, inputs, output):
            self.branch[level] = output
        return hook

    def embed(self, boxes: torch.Tensor, input_size: tuple[int, int], anchors: torch.Tensor | None = None) -> torch.Tensor:
        """``boxes`` (K, 5) ``[batch index, x1, y1, x2, y2]`` in input pixels (and, with ``head``, the
        anchor index each was found at) -> (K, D)."""
        return embed(self.tap.features, self.branch if self.head else None, boxes, input_size, anchors, self.roi_size)


def branch_modules(detector: torch.nn.Module) -> list[torch.nn.Module]:
    """The last hidden layer of the classification branch at every level (``Detect.cv3[i][-2]``)."""
    detect = detector.model[-1]
    if not hasattr(detect, "cv3"):
        raise ValueError(f"{type(detect).__name__} has no classification branch (cv3) to take type features from")
    return [seq[-2] for seq in detect.cv3]


def branch_features(branch: list[torch.Tensor], batch: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """(K, C) classification-branch features at anchors (indices into the detector's concatenated
    anchor list: level by level, row-major) of the given batch items."""
    sizes = torch.tensor([f.shape[2] * f.shape[3] for f in branch], device=anchors.device)
    offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    level = torch.bucketize(anchors, offsets[1:], right=True)
    out = []
    for b, a, lv in zip(batch.long().tolist(), anchors.long().tolist(), level.tolist()):
        f = branch[lv]
        y, x = divmod(a - int(offsets[lv]), f.shape[3])
        out.append(f[b, :, y, x])
    return torch.stack(out).float() if out else torch.zeros(0, branch[0].shape[1])


def embed(maps: list[torch.Tensor], branch: list[torch.Tensor] | None, boxes: torch.Tensor, input_size: tuple[int, int],
          anchors: torch.Tensor | None, roi_size: int = 7) -> torch.Tensor:
    """The feature vectors (K, D) of ``boxes`` from one forward pass's maps of the pooled layers and, where
    given, its classification-branch maps at every level (:class:`Evidence`; the ONNX export's outputs)."""
    s = roi_size
    parts = [roi_align(f, boxes.to(f.dtype), (s, s), spatial_scale=f.shape[-1] / input_size[1], sampling_ratio=2,
                       aligned=True).mean((2, 3)).float() for f in maps]
    if branch is not None:
        parts.append(branch_features(branch, boxes[:, 0], anchors.to(boxes.device)))
    return torch.cat(parts, 1)


def logits_of(scores: torch.Tensor) -> torch.Tensor:
    """The detector's sigmoid class scores -> logits (clamped away from 0 and 1)."""
    s = scores.float().clamp(1e-6, 1 - 1e-6)
    return s.log() - (-s).log1p()


def anchor_scores(predictions: torch.Tensor, boxes: torch.Tensor, min_iou: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """(class scores (K, nc), anchor indices (K,)) the detector gives each given box: those of its most confident prediction
    among the ones overlapping the box at IoU >= ``min_iou`` (else of the one overlapping most).
    ``predictions``: raw detector output (B, 4 + nc, anchors), xywh in input pixels; ``boxes`` (K, 5)
    as in :meth:`Evidence.embed`."""
    out, chosen = [], []
    for box in boxes:
        p = predictions[int(box[0])]
        xy, wh = p[:2].T, p[2:4].T
        iou = box_iou(box[None, 1:].to(p.dtype), torch.cat([xy - wh / 2, xy + wh / 2], 1))[0]
        near = iou >= min(min_iou, float(iou.max()))
        best = torch.where(near, p[4:].max(0).values, torch.full_like(iou, -1.0)).argmax()
        out.append(p[4:, best])
        chosen.append(best)
    if not out:
        return predictions.new_zeros((0, predictions.shape[1] - 4)), torch.zeros(0, dtype=torch.long)
    return torch.stack(out), torch.stack(chosen)

