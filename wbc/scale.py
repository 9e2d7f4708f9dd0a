"""The magnification of a smear field, read from the field itself: the red-cell diameter in pixels.

A red cell is about 7.5 µm across in any smear, so the typical red-cell diameter gives the pixel
size. Cells are told from the background by colour: L1 distance in Lab from the background colour
(that of the brightest large mode of the green histogram), thresholded half-way to a typical
stained pixel; holes up to a cell's size are filled (red cells have a pale centre). The local
maxima of the mask's distance transform are cell centres (touching cells keep theirs) and their
values the cells' inscribed radii. Each centre weighs the cell pixels nearest to it; centres with
radii beyond 0.5 .. 1.6 x the area-weighted median are left out (WBCs and clumps above, platelets
and debris below), and the estimate is the mean radius between the 35th and 65th area-weighted
percentiles of the rest. Weighing by area, a centre more or less moves it little, so it follows a
rescaled field closely. Twice that radius, times a shape factor, is the diameter.

The field is looked at twice: coarsely (longest side ``COARSE_SIDE``), then at the resolution that
makes a red cell about ``CELL_PX`` wide (never above the field's own), on a centre crop of at most
``MAX_SIDE`` pixels: the work per field is bounded (~1.6-2.6 ms on one CPU core for 360-640 px
fields, ~4 ms at 2000 x 2000) and small cells stay measurable.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

RBC_DIAMETER_UM = 7.5  # µm: a normal red cell, in any smear
MIN_CELLS = 5  # fewer red-cell-sized objects than this give no estimate
COARSE_SIDE = 96  # px: longest side of the coarse look
COARSE_MIN = 5.0  # px: a coarse width below this is looked at again, 4x closer
CELL_PX = 24.0  # px: red-cell width (twice the inscribed radius) the fine look works at
MAX_SIDE = 176  # px: largest side of the fine look (a centre crop of bigger fields)
TRIM = (0.5, 1.6)  # cells whose radius lies outside these multiples of the median are left out
CENTRAL = (0.35, 0.65)  # the estimate: mean radius between these area-weighted quantiles of the rest
# Twice the inscribed radius falls short of a cell's area-equivalent diameter: by 1.10 .. 1.19 per
# source in real smears (median over isolated convex cells of TXL-PBC train; mean 1.13: cells are
# not discs, and touching cells leave extra small centres), by 1.01 .. 1.08 on drawn, slightly
# elliptical cells. 1.10 keeps both within 10% (real cells read ~3% small). Label boxes are looser
# still: sqrt(w * h) of a box is ~1.1 x the cell it holds.
DIAMETER_PER_INSCRIBED = 1.10


@dataclass
class ScaleEstimate:
    """``diameter_px``: typical red-cell diameter in the field's pixels, None when the field gives no
    reliable estimate (blank, or fewer than ``MIN_CELLS`` cells); ``cells``: how many red-cell-sized
    objects it came from (their area in units of one cell's, cells cut by the border count in part)."""

    diameter_px: float | None
    cells: int

    @property
    def pixel_size_um(self) -> float | None:
        """µm per pixel, or None."""
        return RBC_DIAMETER_UM / self.diameter_px if self.diameter_px else None


def estimate_scale(image_bgr: np.ndarray) -> ScaleEstimate:
    """Red-cell diameter of a uint8 BGR field (H x W x 3, any size and stain)."""
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"estimate_scale wants a uint8 H x W x 3 BGR image, got {image_bgr.dtype} {image_bgr.shape}")
    field = _Pyramid(image_bgr)
    # coarse look; where the cells come out too small to measure, closer on a centre crop
    s = min(1.0, COARSE_SIDE / max(image_bgr.shape[:2]))
    while True:
        small = field.look(s, COARSE_SIDE / s)
        width, _ = _measure(small, max_hole=0.02 * small.shape[0] * small.shape[1])
        if (width is not None and width >= COARSE_MIN) or s >= 1:
            break
        s = min(1.0, 4 * s)
    if width is None:
        return ScaleEstimate(None, 0)
    # fine look, red cells about CELL_PX across
    fine = min(1.0, s * CELL_PX / width)
    cell_px = width * fine / s
    width, area = _measure(field.look(fine, MAX_SIDE / fine), max_hole=np.pi * (cell_px / 2) ** 2)
    if width is None:
        return ScaleEstimate(None, 0)
    diameter = DIAMETER_PER_INSCRIBED * width
    cells = int(round(area / (np.pi * diameter ** 2 / 4)))
    return ScaleEstimate(diameter / fine if cells >= MIN_CELLS else None, cells)


class _Pyramid:
    """A field and its halvings (2 x 2 averages, OpenCV's fast case), made as they are needed."""

    def __init__(self, image: np.ndarray):
        self.levels = [image]

    def look(self, s: float, side: float) -> np.ndarray:
        """The centre crop (at most ``side`` x ``side`` field pixels) scaled by ``s`` <= 1: from the
        smallest halving still at least as large, linear for the rest."""
        k = max(0, int(np.floor(-np.log2(s) + 1e-9)))
        while len(self.levels) <= k and min(self.levels[-1].shape[:2]) >= 2:
            top = self.levels[-1]
            h, w = top.shape[0] // 2, top.shape[1] // 2
            self.levels.append(cv2.resize(top[:2 * h, :2 * w], (w, h), interpolation=cv2.INTER_AREA))
        k = min(k, len(self.levels) - 1)
        image, rest = self.levels[k], s * 2 ** k
        h, w = image.shape[:2]
        side = int(side / 2 ** k)
        y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
        image = image[y0:y0 + side, x0:x0 + side]
        if rest >= 1:
            return image
        h, w = image.shape[:2]
        return cv2.resize(image, (max(1, round(w * rest)), max(1, round(h * rest))), interpolation=cv2.INTER_LINEAR)


def _cell_mask(image: np.ndarray) -> np.ndarray | None:
    """255 where a cell is (holes not filled), or None when nothing stands out from the background."""
    green = cv2.extractChannel(image, 1)
    hist = np.convolve(cv2.calcHist([green], [0], None, [256], [0, 256]).ravel(), np.ones(7) / 7, mode="same")
    modes = (hist >= np.roll(hist, 1)) & (hist >= np.roll(hist, -1)) & (hist >= 0.3 * hist.max())
    background = cv2.inRange(green, *[int(np.nonzero(modes)[0].max()) + d for d in (-3, 3)])  # the brightest large mode
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    distance = cv2.transform(cv2.absdiff(lab, cv2.mean(lab, background)), np.ones((1, 3)))  # L1, saturates at 255
    distance = cv2.GaussianBlur(distance, (3, 3), 0)
    noise = max(1.0, cv2.mean(distance, background)[0])
    counts = cv2.calcHist([distance], [0], None, [256], [0, 256]).ravel()
    counts[: int(4 * noise) + 1] = 0  # stained: well above the background's noise
    if counts.sum() < 0.01 * distance.size:
        return None
    typical = int(np.searchsorted(np.cumsum(counts), counts.sum() / 2))  # median stained pixel
    # half-way between the background and a typical cell pixel
    return cv2.compare(distance, max(0.5 * typical, 3 * noise), cv2.CMP_GT)


def _fill_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """``mask`` with its holes of at most ``max_area`` pixels filled (not those open to the border)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.bitwise_not(mask), connectivity=4)
    x, y, w, h, area = stats.T
    open_to_border = (x == 0) | (y == 0) | (x + w == mask.shape[1]) | (y + h == mask.shape[0])
    fill = np.where(~open_to_border & (area <= max_area), 255, 0).astype(np.uint8)
    fill[0] = 0  # label 0: the mask itself
    return cv2.bitwise_or(mask, np.take(fill, labels))


def _measure(image: np.ndarray, max_hole: float) -> tuple[float | None, float]:
    """(typical cell width: twice the inscribed radius, in ``image`` pixels, or None; the area in
    pixels of the cells it came from)."""
    mask = _cell_mask(image)
    if mask is None:
        return None, 0.0
    mask = _fill_holes(mask, max_hole)
    inside = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    centres = (inside >= cv2.dilate(inside, np.ones((3, 3), np.uint8))) & (inside >= 1.5)
    if not centres.any():
        return None, 0.0
    # each centre weighs the cell pixels nearest to it (labels number centres in scan order)
    _, nearest = cv2.distanceTransformWithLabels(np.where(centres, 0, 255).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    radius = inside[centres] - 0.5  # the distance runs to the first background pixel's centre, half a pixel past the edge
    area = np.bincount(cv2.bitwise_and(nearest, nearest, mask=mask).ravel(), minlength=radius.size + 1)[1:].astype(float)
    order = np.argsort(radius)
    radius, area = radius[order], area[order]
    median = radius[np.searchsorted(np.cumsum(area), area.sum() / 2)]
    kept = (radius > TRIM[0] * median) & (radius < TRIM[1] * median)
    if not kept.any():
        return None, 0.0
    return 2 * _central_mean(radius[kept], area[kept], *CENTRAL), float(area[kept].sum())


def _central_mean(values: np.ndarray, weights: np.ndarray, lo: float, hi: float) -> float:
    """Mean of sorted ``values`` between the weighted quantiles ``lo`` and ``hi`` (0 .. 1), values
    straddling a bound counted in part, so that it moves smoothly with the weights."""
    top = np.cumsum(weights) / weights.sum()
    share = np.clip(np.minimum(top, hi) - np.maximum(top - weights / weights.sum(), lo), 0, None)
    return float((values * share).sum() / share.sum())
