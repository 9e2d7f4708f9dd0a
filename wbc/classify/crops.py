"""Cutting single-cell crops out of fields: margin, squaring, image borders, output size."""

from __future__ import annotations

import cv2
import numpy as np

PAD_VALUE = 114  # the grey ultralytics pads with; outside-the-field pixels look the same in crops and letterboxes


def crop_box(image: np.ndarray, box, margin: float = 0.1, square: bool = True, size: int | None = None) -> np.ndarray:
    """Crop ``box`` (xyxy, pixels) from an HWC image.

    ``margin``: fraction of the box's longer side added on every side; ``square``: grow the shorter
    side to the longer one (about the box centre). Parts outside the image are filled with
    ``PAD_VALUE``, so the cell stays centred at the image border. ``size``: resize to size x size
    (non-square crops are padded to square first, never stretched)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        raise ValueError(f"empty box {box}")
    extra = margin * max(w, h)
    if square:
        w = h = max(w, h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - w / 2 - extra)), int(round(cy - h / 2 - extra))
    right, bottom = int(round(cx + w / 2 + extra)), int(round(cy + h / 2 + extra))
    H, W = image.shape[:2]
    crop = np.full((bottom - top, right - left, *image.shape[2:]), PAD_VALUE, image.dtype)
    sx1, sy1, sx2, sy2 = max(left, 0), max(top, 0), min(right, W), min(bottom, H)
    if sx2 > sx1 and sy2 > sy1:
        crop[sy1 - top:sy2 - top, sx1 - left:sx2 - left] = image[sy1:sy2, sx1:sx2]
    if size:
        ch, cw = crop.shape[:2]
        if ch != cw:
            side = max(ch, cw)
            padded = np.full((side, side, *image.shape[2:]), PAD_VALUE, image.dtype)
            oy, ox = (side - ch) // 2, (side - cw) // 2
            padded[oy:oy + ch, ox:ox + cw] = crop
            crop = padded
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR)
    return crop
