"""Synthetic non-cells for the unseen-type benchmark, made from real fields: each returns a field
and the box a detector would have to call a WBC for the artefact to be counted.

- ``debris``: a WBC-sized box on the field's background and red cells, away from the WBC.
- ``precipitate``: dark purple stain precipitate (clumped irregular blobs) painted there instead.
- ``cut_cell``: the field cropped through its WBC, so that only part of the cell is left at the edge.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("debris", "precipitate", "cut_cell")


def _free_box(shape: tuple[int, int], wbc: np.ndarray, rng: np.random.Generator, tries: int = 50) -> np.ndarray | None:
    """A box of the WBC's size inside the field that does not overlap it (None if none fits)."""
    h, w = shape
    bw, bh = wbc[2] - wbc[0], wbc[3] - wbc[1]
    for _ in range(tries):
        x, y = rng.uniform(0, max(w - bw, 1)), rng.uniform(0, max(h - bh, 1))
        box = np.array([x, y, x + bw, y + bh])
        if box[2] <= w and box[3] <= h and (box[2] < wbc[0] or box[0] > wbc[2] or box[3] < wbc[1] or box[1] > wbc[3]):
            return box
    return None


def debris(image: np.ndarray, wbc: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    box = _free_box(image.shape[:2], wbc, rng)
    return None if box is None else (image, box)


def precipitate(image: np.ndarray, wbc: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    box = _free_box(image.shape[:2], wbc, rng)
    if box is None:
        return None
    out = image.copy()
    x1, y1, x2, y2 = box
    size = min(x2 - x1, y2 - y1)
    mask = np.zeros(image.shape[:2], np.uint8)
    for _ in range(int(rng.integers(6, 16))):  # a clump of small irregular granules
        cx, cy = rng.uniform(x1 + size * 0.2, x2 - size * 0.2), rng.uniform(y1 + size * 0.2, y2 - size * 0.2)
        axes = (int(rng.uniform(0.03, 0.12) * size) + 1, int(rng.uniform(0.03, 0.12) * size) + 1)
        cv2.ellipse(mask, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    mask = cv2.GaussianBlur(mask, (5, 5), 0).astype(np.float32)[..., None] / 255
    colour = np.array([rng.uniform(90, 140), rng.uniform(20, 60), rng.uniform(70, 120)], np.float32)  # BGR, purple
    out = (out * (1 - mask) + colour * mask).astype(np.uint8)
    ys, xs = np.nonzero(mask[..., 0] > 0.5)
    if not len(xs):
        return None
    return out, np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def cut_cell(image: np.ndarray, wbc: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop the field through the WBC (35-65% of its width or height left), as a field edge cuts a cell."""
    x1, y1, x2, y2 = wbc
    keep = rng.uniform(0.35, 0.65)
    side = int(rng.integers(4))
    h, w = image.shape[:2]
    if side == 0:  # the cell's right part is left, at the left edge
        cut = int(x2 - keep * (x2 - x1))
        return image[:, cut:], np.array([0, y1, x2 - cut, y2])
    if side == 1:
        cut = int(x1 + keep * (x2 - x1))
        return image[:, :cut], np.array([x1, y1, cut, y2])
    if side == 2:
        cut = int(y2 - keep * (y2 - y1))
        return image[cut:], np.array([x1, 0, x2, y2 - cut])
    cut = int(y1 + keep * (y2 - y1))
    return image[:cut], np.array([x1, y1, x2, cut]) if cut < h else None


MAKERS = {"debris": debris, "precipitate": precipitate, "cut_cell": cut_cell}
