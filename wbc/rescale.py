"""Every field at the scale the model was trained on.

Smears come at other magnifications (red cells ~126 px across in Raabin-WBC's fields, ~73 px in
PBC's, ~35 px in LeukemiaAttri's), and a detector finds cells at the sizes it learned. So a field is resized by
``reference diameter / its red-cell diameter`` before anything else (tiling included): in training
(every source to the reference of the largest one), in evaluation and in prediction. The red-cell
diameter is estimated from the field itself (:mod:`wbc.scale`) or follows from a given pixel size
(µm per pixel; a red cell is about 7.5 µm across). The model card records the reference
(``train_rbc_diameter_px``): a model without one is run at the scale it is given.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from ultralytics.data.dataset import YOLODataset

MIN_FACTOR, MAX_FACTOR = 0.2, 5.0  # beyond these, an estimate is taken for a failure and the field is left as it is


def diameter_of(image: np.ndarray, pixel_size_um: float | None = None) -> tuple[float | None, str]:
    """(red-cell diameter in pixels or None, how it was found: 'given', 'estimated' or 'no estimate')."""
    from wbc.scale import RBC_DIAMETER_UM, estimate_scale

    if pixel_size_um:
        return RBC_DIAMETER_UM / pixel_size_um, "given"
    estimate = estimate_scale(image)
    return (estimate.diameter_px, "estimated") if estimate.diameter_px else (None, "no estimate")


SCALE_GROUP = 32  # consecutive fields whose estimates are pooled (predict.py, test.py)
AGREE = 1.25  # estimates within this factor of the group's median are taken for the same magnification


def consensus(found: list[tuple[float | None, str]]) -> list[tuple[float | None, str]]:
    """Per-field (diameter, how) from :func:`diameter_of` -> the same, where the fields' estimates
    agree with their median (within ``AGREE``) replaced by the median of those that agree
    ('estimated, median of N fields'): one field's estimate varies with its content by about ±10 %,
    the group's much less.
    A field far from the median (another microscope in the same folder) keeps its own; a field
    without an estimate takes the median. Given pixel sizes are kept as they are."""
    estimated = [d for d, how in found if how == "estimated"]
    if len(estimated) < 3:
        return found
    median = float(np.median(estimated))
    near = [d for d in estimated if 1 / AGREE <= d / median <= AGREE]
    pooled, label = float(np.median(near)), f"estimated, median of {len(near)} fields"
    return [(pooled, label) if how == "no estimate" or how == "estimated" and 1 / AGREE <= d / median <= AGREE else (d, how)
            for d, how in found]


def factor_for(diameter_px: float | None, reference_px: float | None) -> float:
    """Resize factor taking a field with red cells ``diameter_px`` across to ``reference_px``; 1 when
    either is unknown or the factor is implausible."""
    if not diameter_px or not reference_px:
        return 1.0
    f = reference_px / diameter_px
    return f if MIN_FACTOR <= f <= MAX_FACTOR else 1.0


def resize(image: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1) < 1e-3:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def reference_origin(fields) -> str:
    """The origin with the most train fields of a canonical fields table: the one whose scale and
    colours (:mod:`wbc.colour`) training and inference bring every field to."""
    return fields[fields["split"] == "train"]["origin"].value_counts().idxmax()


def origin_rbc_diameters(canonical_root: Path, split: str = "train", sample: int = 200) -> dict[str, float]:
    """Median red-cell diameter (px) that :func:`wbc.scale.estimate_scale` finds per origin of a
    canonical dataset's ``split``, on up to ``sample`` fields of each (a fixed sample, ranked by a
    hash of the file name so that no class or name prefix is favoured); origins without any estimate
    are left out."""
    import hashlib

    import pandas as pd

    from wbc.scale import estimate_scale

    fields = pd.read_csv(Path(canonical_root) / "fields.csv", keep_default_na=False)
    fields = fields[fields["split"] == split]
    diameters = {}
    for origin, group in fields.groupby("origin"):
        names = sorted(group["image"], key=lambda n: hashlib.sha1(n.encode()).hexdigest())[:sample]
        found = [estimate_scale(cv2.imread(str(Path(canonical_root) / "images" / split / n))).diameter_px for n in names]
        found = [d for d in found if d]
        if found:
            diameters[origin] = float(np.median(found))
    return diameters


class ScaledYOLODataset(YOLODataset):
    """YOLODataset that loads each image resized by its own factor (``factors``: image file name ->
    factor relative to the image's pixels) on top of ultralytics' fit to ``imgsz``; boxes are
    normalised, so they follow. ``label_names``: every class id a label file may hold (label sets
    included), when the model has fewer classes."""

    def __init__(self, *args, factors: dict[str, float] | None, imgsz: int, fit: float, label_names=None, colour=None, **kwargs):
        self.factors, self.fit, self.colour = factors, fit, colour
        if label_names is not None:
            kwargs["data"] = {**kwargs["data"], "names": dict(enumerate(label_names))}
        super().__init__(*args, imgsz=imgsz, **kwargs)

    def load_image(self, i, rect_mode=True, resize_short=False):
        fresh = self.ims[i] is None
        im, hw0, hw = super().load_image(i, rect_mode, resize_short)
        if not fresh:
            return im, hw0, hw
        if self.factors is not None:
            wanted = self.factors.get(Path(self.im_files[i]).name, 1.0) * self.fit  # of the original pixels
            extra = wanted * max(hw0) / max(hw)
            if abs(extra - 1) > 1e-3:
                im = resize(im, extra)
        if self.colour is not None:  # as inference does (wbc.colour), after the resize
            from wbc.colour import normalize

            im = normalize(im, self.colour)
        if self.ims[i] is not None:  # ultralytics buffered the image: buffer the rescaled one
            self.ims[i], self.im_hw[i] = im, im.shape[:2]
        return im, hw0, im.shape[:2]


def scaled_dataset(cfg, img_path: str, batch: int | None, data: dict, mode: str, stride: int, factors: dict[str, float] | None,
                   fit: float, label_names: list[str] | None = None, classes: list[int] | None = None, colour=None) -> ScaledYOLODataset:
    """ultralytics' ``build_yolo_dataset`` for detection, with every image at its own scale (``factors``;
    None: as ultralytics loads it) and, with a ``colour`` reference, in its colours (:mod:`wbc.colour`)."""
    from ultralytics.data.build import get_split_fraction
    from ultralytics.utils import colorstr

    train = mode == "train"
    return ScaledYOLODataset(
        img_path=img_path, imgsz=cfg.imgsz, batch_size=batch, augment=train, hyp=cfg, rect=cfg.rect or not train,
        cache=cfg.cache or None, single_cls=cfg.single_cls or False, stride=stride, pad=0.0 if train else 0.5,
        prefix=colorstr(f"{mode}: "), task=cfg.task, classes=cfg.classes if classes is None else classes, data=data,
        fraction=get_split_fraction(cfg.fraction, "train" if train else cfg.split or "val"), factors=factors, fit=fit,
        label_names=label_names, colour=colour)


def fit_factor(imgsz: int, field_size: int) -> float:
    """The factor ultralytics' letterbox applies to a reference field of ``field_size`` pixels."""
    return imgsz / field_size if field_size else 1.0


def tile_needed(height: int, width: int, tile: int, slack: float = 1.5) -> bool:
    """Tile only a field clearly larger than a tile: one up to ``slack`` x the tile goes to the
    network whole (at the training gain, on a larger input), never cut into slivers."""
    return max(height, width) > math.floor(tile * slack)
