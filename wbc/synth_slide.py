"""A generated whole-slide image to test and measure slide reading on: a pyramidal, tiled, JPEG-compressed
TIFF with a smear's zones from left to right -- the thick body, the monolayer, the feathered edge --
and bare glass around them.

The monolayer is a grid of given fields (real smear fields, e.g. PBC val), each enlarged by ``upscale``,
so that every WBC placed in the slide is known: its field, its class, and where it lies in the slide.
The thick body is two fields laid on each other (multiplied: overlapping cells), the feathered edge
sparse red-cell discs on glass. Written tile by tile: memory stays at a few tiles whatever the size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ZONES = (("thick", 0.25), ("monolayer", 0.75), ("feathered", 0.9), ("glass", 1.0))  # zone and its right edge (share of width)


@dataclass(frozen=True)
class Placed:
    """A field placed in the monolayer: its index in the given fields and its top-left corner (level-0 px)."""

    field: int
    x: int
    y: int


def glass_of(fields: list[np.ndarray]) -> np.ndarray:
    """The fields' glass colour (RGB): the median of their brightest tenth of pixels."""
    pixels = np.concatenate([f.reshape(-1, 3) for f in fields[:20]])
    lightness = pixels.astype(np.float32).sum(1)
    return np.median(pixels[lightness >= np.percentile(lightness, 90)], axis=0).astype(np.uint8)


def _fit(image: np.ndarray, side: int, glass: np.ndarray) -> np.ndarray:
    """An RGB field padded with glass to a ``side`` square (fields are a few pixels off square)."""
    h, w = image.shape[:2]
    out = np.empty((side, side, 3), np.uint8)
    out[:] = glass
    out[:min(h, side), :min(w, side)] = image[:side, :side]
    return out


def _feathered(side: int, rng: np.random.Generator, glass: np.ndarray) -> np.ndarray:
    """Glass with a few flattened red cells far apart."""
    out = np.empty((side, side, 3), np.uint8)
    out[:] = glass
    for _ in range(5):
        x, y = rng.integers(20, side - 20, 2)
        cv2.circle(out, (int(x), int(y)), int(side * 0.07), (222, 160, 170), -1)  # a pale red cell (RGB)
    return out


class SlideLayout:
    """Where each zone and each placed field lies in a ``width`` x ``height`` level-0 slide of grid ``cell``
    px (a field's side x ``upscale``)."""

    def __init__(self, fields: list[np.ndarray], width: int, height: int, upscale: float, seed: int = 0):
        side = max(max(f.shape[:2]) for f in fields)
        rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in fields]
        self.glass = glass_of(rgb)
        self.fields = [_fit(f, side, self.glass) for f in rgb]
        self.width, self.height, self.upscale = width, height, upscale
        self.cell = int(round(side * upscale))
        rng = np.random.default_rng(seed)
        self.rows, self.cols = height // self.cell, width // self.cell
        self.kind: dict[tuple[int, int], tuple[str, int]] = {}
        self.placed: list[Placed] = []
        sparse = [_feathered(side, rng, self.glass) for _ in range(8)]
        self.sparse = sparse
        n = 0
        for r in range(1, self.rows - 1):  # a row of glass above and below the smear
            for c in range(self.cols):
                zone = next(z for z, edge in ZONES if (c + 0.5) / self.cols <= edge)
                if zone == "monolayer":
                    self.kind[r, c] = ("field", n % len(fields))
                    self.placed.append(Placed(n % len(fields), c * self.cell, r * self.cell))
                    n += 1
                elif zone == "thick":
                    self.kind[r, c] = ("thick", int(rng.integers(len(fields))))
                elif zone == "feathered":
                    self.kind[r, c] = ("sparse", int(rng.integers(len(sparse))))
        self._cache: dict = {}

    def patch(self, r: int, c: int, downsample: int) -> np.ndarray | None:
        """Grid cell (r, c) at a level's resolution (RGB, side cell / downsample), or None for glass."""
        kind = self.kind.get((r, c))
        if kind is None:
            return None
        key = (kind, downsample)
        if key not in self._cache:
            what, i = kind
            if what == "field":
                image = self.fields[i]
            elif what == "sparse":
                image = self.sparse[i]
            else:  # two fields on each other: cells overlap, hardly any glass shows
                other = self.fields[(i + 1) % len(self.fields)]
                image = (self.fields[i].astype(np.float32) * np.roll(other, other.shape[0] // 3, axis=(0, 1)) / 255 * 0.92).astype(np.uint8)
            side = max(1, self.cell // downsample)
            self._cache[key] = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA if downsample > 1 else cv2.INTER_CUBIC)
            if len(self._cache) > 512:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def tiles(self, downsample: int, tile: int):
        """The level's tiles, row by row (RGB, ``tile`` x ``tile``)."""
        w, h = -(-self.width // downsample), -(-self.height // downsample)
        cell = self.cell / downsample
        for ty in range(0, h, tile):
            for tx in range(0, w, tile):
                out = np.empty((tile, tile, 3), np.uint8)
                out[:] = self.glass
                for r in range(int(ty // cell), int((ty + tile) // cell) + 1):
                    for c in range(int(tx // cell), int((tx + tile) // cell) + 1):
                        p = self.patch(r, c, downsample)
                        if p is None:
                            continue
                        x0, y0 = int(round(c * cell)), int(round(r * cell))
                        ix0, iy0 = max(x0, tx), max(y0, ty)
                        ix1, iy1 = min(x0 + p.shape[1], tx + tile, w), min(y0 + p.shape[0], ty + tile, h)
                        if ix1 > ix0 and iy1 > iy0:
                            out[iy0 - ty:iy1 - ty, ix0 - tx:ix1 - tx] = p[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
                yield out


def write_slide(path: Path, layout: SlideLayout, mpp: float, levels: int = 6, tile: int = 256, quality: int = 90) -> Path:
    """Write ``layout`` as a pyramidal tiled TIFF (level 0 at ``mpp`` µm/px, each next level half the size),
    with the resolution tags tiffslide reads the µm/px from."""
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            d = 2 ** level
            shape = (-(-layout.height // d), -(-layout.width // d), 3)
            resolution = (1e4 / (mpp * d), 1e4 / (mpp * d))
            tif.write(layout.tiles(d, tile), shape=shape, dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                      compression="jpeg", compressionargs={"level": quality}, resolution=resolution, resolutionunit="CENTIMETER",
                      subifds=levels - 1 if level == 0 else None, subfiletype=1 if level else 0)
    return path


def smear_field(rng: np.random.Generator, side: int = 360, rbc_diameter: int = 36, wbc: tuple[int, int] | None = None) -> np.ndarray:
    """A generated monolayer field (BGR): PBC's glass colour, pale red discs of ``rbc_diameter`` px that
    just touch, and at ``wbc`` (x, y) a dark violet nucleus of about two red cells across."""
    out = np.empty((side, side, 3), np.uint8)
    out[:] = (203, 228, 255)
    r = rbc_diameter // 2
    step = rbc_diameter + 2
    for y in range(r, side - r, step):
        for x in range(r + (y // step % 2) * step // 2, side - r, step):
            if rng.random() < 0.8:
                cv2.circle(out, (int(x + rng.integers(-2, 3)), int(y + rng.integers(-2, 3))), r, (150, 130, 215), -1)
    if wbc:
        cv2.circle(out, wbc, int(rbc_diameter * 1.1), (200, 190, 225), -1)  # cytoplasm
        cv2.circle(out, wbc, int(rbc_diameter * 0.7), (130, 40, 70), -1)  # nucleus
    return out
