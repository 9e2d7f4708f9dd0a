"""Fields larger than the detector's input (whole-slide tiles, 10x / 40x fields) are cut into
overlapping tiles; each tile is analysed on its own and the cells are merged.

A cell cut by a tile's edge is seen whole in the neighbouring tile as long as the overlap is larger
than a cell, so detections touching an inner tile edge are dropped (their whole copy is kept from
the other tile), and the remaining duplicates in the overlap are merged by class-agnostic NMS
(highest confidence wins).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms

from wbc.inference import Cell

EDGE = 2.0  # pixels: a box this close to an inner tile edge counts as cut by it


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    n = int(np.ceil((length - overlap) / (tile - overlap)))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tiles(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) windows covering the image."""
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]


def analyze_tiled(analyzer, image: np.ndarray, tile: int, overlap: int, batch: int = 8, merge_iou: float = 0.5) -> list[Cell]:
    """Cells of a large BGR image, in its own pixel coordinates."""
    h, w = image.shape[:2]
    windows = tiles(h, w, tile, overlap)
    kept: list[Cell] = []
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        for (x0, y0, x1, y1), cells in zip(chunk, analyzer([image[y0:y1, x0:x1] for x0, y0, x1, y1 in chunk], [1.0] * len(chunk))):
            for c in cells:
                bx1, by1, bx2, by2 = c.box
                cut = ((x0 > 0 and bx1 <= EDGE) or (y0 > 0 and by1 <= EDGE) or
                       (x1 < w and bx2 >= x1 - x0 - EDGE) or (y1 < h and by2 >= y1 - y0 - EDGE))
                if not cut:
                    c.box = (bx1 + x0, by1 + y0, bx2 + x0, by2 + y0)
                    kept.append(c)
    if not kept:
        return []
    keep = nms(torch.tensor([c.box for c in kept], dtype=torch.float32), torch.tensor([c.confidence for c in kept]), merge_iou)
    return [kept[i] for i in keep.tolist()]
