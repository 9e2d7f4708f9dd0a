"""Whole-slide images (pyramidal TIFF, SVS, NDPI) read with tiffslide, field by field, in bounded memory.

How a slide is analysed, as a technologist does a manual differential:

1. **Scale.** The slide's µm/px comes from its metadata (``--pixel-size`` overrides it; without
   either, from the red cells of a few fields, :func:`wbc.scale.estimate_scale`). The pyramid level
   whose µm/px is nearest the model's training scale is read; fields are resized from it to the
   training scale as any field is.
2. **Where to count** (:func:`monolayer_blocks`). A thumbnail is cut into blocks of one field each,
   and each block's *cover* is measured: the share of its pixels that are stained, i.e. not glass
   (farther than ``GLASS_DISTANCE`` in CIELAB from the slide's glass colour, :func:`stained_share`).
   The rule:
   - cover < ``MIN_COVER`` (0.35): glass, or the feathered edge, where cells lie apart and flatten
     and WBCs are pushed (neutrophils, monocytes over-represented);
   - cover > ``MAX_COVER`` (0.85): the thick body, where red cells overlap and WBCs shrink and
     round up (lymphocytes over-represented, nuclei unreadable);
   - in between: the monolayer, where red cells just touch. Only these blocks are analysed.
3. **Sampling.** Monolayer blocks are visited in a seeded random order (spread over the whole
   monolayer, not one corner of it) until ``target_wbc`` WBCs are counted (100 or 200, as a manual
   differential), or the monolayer is used up.
4. **Fields** are read with a margin of about one cell on every side; a cell belongs to the field
   whose core holds its centre, so a cell on a border is counted once.

Memory: one thumbnail (at most ``THUMBNAIL_SIDE`` px) and ``batch`` fields at a time, whatever the
slide's size. Each cell is reported in level-0 slide pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from wbc.errors import UsageError

SLIDE_SUFFIXES = {".svs", ".ndpi", ".scn", ".bif"}
TIFF_SUFFIXES = {".tif", ".tiff"}
THUMBNAIL_SIDE = 4096
MIN_COVER, MAX_COVER = 0.35, 0.85
GLASS_DISTANCE = 20  # CIELAB units (8-bit): PBC's monolayer fields cover 0.45-0.65 of their area at this distance
# at the training scale: a cell whose centre lies in a field's core is seen whole up to 200 px across, 97% of PBC's
# WBCs (142 px at the median); 120 px found 3 fewer of 200 WBCs on benchmarks/slide_reading.py (2026-12-04)
CELL_MARGIN_PX = 100


def is_slide(path: Path) -> bool:
    """A whole-slide image: an SVS / NDPI / SCN / BIF file, or a TIFF with a pyramid (more than one level)."""
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1
    except Exception:  # noqa: BLE001 -- not a readable TIFF: load_image reports it
        return False


def open_slide(path: Path):
    import tiffslide

    try:
        return tiffslide.TiffSlide(path)
    except Exception as e:  # noqa: BLE001 -- tifffile / tiffslide raise many kinds for a file they cannot read
        raise UsageError(f"{path}: not a readable whole-slide image ({type(e).__name__}: {str(e)[:160]})") from None


def slide_mpp(slide) -> float | None:
    """µm per level-0 pixel from the slide's metadata, or None."""
    import tiffslide

    value = slide.properties.get(tiffslide.PROPERTY_NAME_MPP_X)
    return float(value) if value else None


def nearest_level(downsamples: list[float], mpp0: float, target_mpp: float) -> int:
    """The pyramid level whose µm/px is nearest ``target_mpp`` (in ratio)."""
    return min(range(len(downsamples)), key=lambda i: abs(math.log(mpp0 * downsamples[i] / target_mpp)))


def stained_share(thumbnail: np.ndarray) -> np.ndarray:
    """Per pixel of an RGB thumbnail: 1 where stained (a cell), 0 for glass. Glass is the brightest thing
    on a slide: its colour is the median of the brightest tenth of the pixels, and a pixel is stained
    when it lies more than ``GLASS_DISTANCE`` from it in CIELAB (OpenCV's 8-bit scale)."""
    lab = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2LAB).astype(np.float32)
    lightness = lab[..., 0]
    glass = np.median(lab[lightness >= np.percentile(lightness, 90)], axis=0)
    return (np.linalg.norm(lab - glass, axis=2) > GLASS_DISTANCE).astype(np.float32)


@dataclass(frozen=True)
class Block:
    """A field-sized block of the slide: its core's top-left corner and side in level-0 pixels, and its cover."""

    x: int
    y: int
    side: int
    cover: float


def monolayer_blocks(thumbnail: np.ndarray, scale: float, side: int, width: int, height: int) -> tuple[list[Block], dict]:
    """(the monolayer blocks, counts of every block by kind). ``scale``: thumbnail px per level-0 px;
    ``side``: a field's core in level-0 px; ``width``, ``height``: level 0."""
    stained = stained_share(thumbnail)
    blocks, kinds = [], {"glass or feathered edge": 0, "thick": 0, "monolayer": 0}
    for y in range(0, height - side + 1, side):
        for x in range(0, width - side + 1, side):
            x0, y0 = int(x * scale), int(y * scale)
            x1, y1 = max(x0 + 1, int((x + side) * scale)), max(y0 + 1, int((y + side) * scale))
            cover = float(stained[y0:y1, x0:x1].mean()) if y1 <= stained.shape[0] and x1 <= stained.shape[1] else 0.0
            kind = "glass or feathered edge" if cover < MIN_COVER else "thick" if cover > MAX_COVER else "monolayer"
            kinds[kind] += 1
            if kind == "monolayer":
                blocks.append(Block(x, y, side, cover))
    return blocks, kinds


@dataclass
class SlidePlan:
    """How a slide is read: level, its downsample and µm/px, the resize to the training scale, the
    field core and margin (level pixels), and the blocks to visit in order."""

    path: Path
    width: int
    height: int
    mpp0: float
    mpp_from: str
    level: int
    downsample: float
    factor: float
    core: int
    margin: int
    blocks: list[Block]
    kinds: dict
    thumbnail: np.ndarray = field(repr=False)
    thumbnail_scale: float = 1.0

    @property
    def mpp(self) -> float:
        return self.mpp0 * self.downsample

    def as_dict(self) -> dict:
        return {"level": self.level, "downsample": round(self.downsample, 3), "pixel_size_um_level0": round(self.mpp0, 4),
                "pixel_size_from": self.mpp_from, "pixel_size_um_read": round(self.mpp, 4), "resize_factor": round(self.factor, 4),
                "field_core_px": self.core, "field_margin_px": self.margin, "blocks": self.kinds}


def plan_slide(slide, path: Path, target_mpp: float | None, field_size: int, pixel_size: float | None, seed: int = 0,
               estimate: Callable[[np.ndarray], float | None] | None = None) -> SlidePlan:
    """Choose the level, the field geometry and the blocks of ``slide`` (see the module's rules).
    ``target_mpp``: µm/px of the model's training fields (None: read level 0 as it is); ``field_size``:
    the training fields' side; ``estimate``: red-cell diameter (px) of an RGB field, when the slide
    carries no µm/px and none is given."""
    width, height = slide.dimensions
    downsamples = [float(d) for d in slide.level_downsamples]
    thumb_scale = min(1.0, THUMBNAIL_SIDE / max(width, height))
    thumbnail = np.asarray(slide.get_thumbnail((max(1, int(width * thumb_scale)), max(1, int(height * thumb_scale)))).convert("RGB"))
    thumb_scale = thumbnail.shape[1] / width
    mpp0, how = (pixel_size, "given") if pixel_size else (slide_mpp(slide), "slide metadata")
    if not mpp0:
        mpp0, how = _estimated_mpp(slide, thumbnail, thumb_scale, estimate), "estimated from red cells"
    if not mpp0:
        raise UsageError(f"{path}: the slide records no µm per pixel and its red cells gave no estimate; pass --pixel-size")
    level = nearest_level(downsamples, mpp0, target_mpp) if target_mpp else 0
    factor = (mpp0 * downsamples[level] / target_mpp) if target_mpp else 1.0
    core = max(32, round(field_size / factor))
    margin = round(CELL_MARGIN_PX / factor)
    blocks, kinds = monolayer_blocks(thumbnail, thumb_scale, round(core * downsamples[level]), width, height)
    order = np.random.default_rng(seed).permutation(len(blocks))
    return SlidePlan(path, width, height, mpp0, how, level, downsamples[level], factor, core, margin,
                     [blocks[i] for i in order], kinds, thumbnail, thumb_scale)


def _estimated_mpp(slide, thumbnail: np.ndarray, scale: float, estimate) -> float | None:
    """µm per level-0 pixel from the red cells of up to 8 monolayer-looking level-0 fields of 1024 px."""
    from wbc.scale import RBC_DIAMETER_UM

    if estimate is None:
        return None
    width, height = slide.dimensions
    blocks, _ = monolayer_blocks(thumbnail, scale, 1024, width, height)
    found = []
    for b in blocks[:: max(1, len(blocks) // 8)][:8]:
        d = estimate(np.asarray(slide.read_region((b.x, b.y), 0, (1024, 1024)).convert("RGB")))
        if d:
            found.append(d)
    return RBC_DIAMETER_UM / float(np.median(found)) if found else None


@dataclass
class SlideField:
    """One analysed field: its core's top-left corner in level-0 px, the image read (BGR, core plus margin,
    level pixels) and the cells whose centre lies in the core (boxes in the image's pixels)."""

    x: int
    y: int
    image: np.ndarray
    cells: list


def sweep(slide, plan: SlidePlan, analyze: Callable[[list[np.ndarray]], list[list]], is_counted: Callable[[object], bool],
          target_wbc: int | None, batch: int) -> Iterator[SlideField]:
    """Analyse the plan's blocks ``batch`` fields at a time until ``target_wbc`` counted cells (``is_counted``)
    are found; yields each field with its cells. ``analyze``: BGR fields at the read level -> cells per field."""
    counted, pending = 0, []
    side = plan.core + 2 * plan.margin
    ds = plan.downsample
    for i, block in enumerate([*plan.blocks, None]):
        if block is not None:
            x, y = block.x - round(plan.margin * ds), block.y - round(plan.margin * ds)
            region = slide.read_region((x, y), plan.level, (side, side))  # outside the slide: transparent, composited white
            rgba = np.asarray(region.convert("RGBA")).astype(np.float32)
            rgb = rgba[..., :3] * (rgba[..., 3:] / 255) + 255 * (1 - rgba[..., 3:] / 255)
            pending.append((block, cv2.cvtColor(rgb.round().astype(np.uint8), cv2.COLOR_RGB2BGR)))
        if pending and (block is None or len(pending) == batch):
            for (b, image), cells in zip(pending, analyze([im for _, im in pending])):
                core = [c for c in cells if in_core(c.box, plan.margin, plan.core)]
                counted += sum(1 for c in core if is_counted(c))
                yield SlideField(b.x, b.y, image, core)
            pending = []
            if target_wbc and counted >= target_wbc:
                return


def in_core(box: tuple[float, float, float, float], margin: int, core: int) -> bool:
    """Whether an xyxy box's centre lies in the field's core [margin, margin + core)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return margin <= cx < margin + core and margin <= cy < margin + core


def to_slide(box: tuple[float, float, float, float], f: SlideField, plan: SlidePlan) -> tuple[float, ...]:
    """A box in a field's pixels (read level, with margin) -> level-0 slide pixels."""
    ds = plan.downsample
    ox, oy = f.x - plan.margin * ds, f.y - plan.margin * ds
    return (ox + box[0] * ds, oy + box[1] * ds, ox + box[2] * ds, oy + box[3] * ds)


def field_map(plan: SlidePlan, analysed: list[tuple[int, int]], cells: list) -> np.ndarray:
    """The slide's thumbnail (BGR) with the monolayer blocks outlined grey, the analysed fields green
    and each WBC a red dot: where the count came from."""
    image = cv2.cvtColor(plan.thumbnail, cv2.COLOR_RGB2BGR)
    s = plan.thumbnail_scale
    side = plan.core * plan.downsample
    for b in plan.blocks:
        cv2.rectangle(image, (int(b.x * s), int(b.y * s)), (int((b.x + side) * s), int((b.y + side) * s)), (170, 170, 170), 1)
    for x, y in analysed:
        cv2.rectangle(image, (int(x * s), int(y * s)), (int((x + side) * s), int((y + side) * s)), (40, 170, 40), 2)
    for c in cells:
        cv2.circle(image, (int((c.box[0] + c.box[2]) / 2 * s), int((c.box[1] + c.box[3]) / 2 * s)), 2, (30, 30, 220), -1)
    return image
