"""Synthetic smear fields for tests and demos, written in any supported raw format.

Each field holds red cells (pale pink discs), platelets (small purple dots) and WBCs whose class
sets the nucleus colour and size, and whose attributes change what is visible, so that a model
can learn them: attribute 0 scales the cell, 1 sets the number of nucleus lobes, 2 tints the
cytoplasm, 3 adds vacuoles (further attributes cycle through the same effects).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from wbc.formats import write_dataset
from wbc.schema import NOT_APPLICABLE, UNKNOWN, Attribute, Box, Dataset, DatasetSpec, Field

WBC_CLASSES = ["LY", "MO", "NE"]
NAMES = [*WBC_CLASSES, "RBC", "PLT"]
# class -> (nucleus BGR, nucleus radius as a fraction of the cell, cytoplasm BGR)
_LOOK = {"LY": ((120, 30, 60), 0.75, (215, 170, 150)), "MO": ((150, 70, 110), 0.55, (205, 185, 175)), "NE": ((110, 40, 90), 0.4, (200, 195, 215))}


def synthetic_spec(root: Path, numeric: bool = False, fmt: str = "coco") -> DatasetSpec:
    """The spec of generated data. ``numeric``: AttriDet-style 0/1 values with 2 = not applicable."""
    if numeric:
        attrs = [Attribute(n, ("0", "1"), (), ("2",)) for n in ("cell_size", "nuclear_shape", "cytoplasm", "vacuoles")]
    else:
        wbc = tuple(WBC_CLASSES)
        attrs = [
            Attribute("cell_size", ("small", "big"), ("",), applies_to=wbc),
            Attribute("nucleus_lobes", ("one", "two", "three"), ("",), applies_to=wbc),
            Attribute("cytoplasm_colour", ("pale", "blue"), ("",), applies_to=wbc),
            Attribute("vacuoles", ("no", "yes"), ("",), applies_to=wbc),
        ]
    return DatasetSpec("synthetic", root / "dataset.yaml", root, fmt, list(NAMES), {"train": "train", "val": "val"},
                       attrs, {}, list(WBC_CLASSES))


def _look(cls: str, index: int):
    """Class -> (nucleus BGR, nucleus radius fraction, cytoplasm BGR); classes without a fixed look get a distinct one."""
    if cls in _LOOK:
        return _LOOK[cls]
    rng = np.random.default_rng(index)
    return tuple(int(v) for v in rng.integers(40, 160, 3)), 0.35 + 0.05 * (index % 9), tuple(int(v) for v in rng.integers(150, 230, 3))


def _draw_wbc(img: np.ndarray, rng, cls: str, index: int, codes: tuple[int, ...], cx: float, cy: float, r: float) -> float:
    nucleus_color, nucleus_frac, cytoplasm = _look(cls, index)
    effects = [max(c, 0) for c in codes]
    size, lobes, tint, vacuoles = (effects + [0, 0, 0, 0])[:4]
    r = r * (1.35 if size else 1.0)
    cyto = np.array(cytoplasm, float) + (np.array([45, -25, -40]) if tint else 0)
    cv2.circle(img, (int(cx), int(cy)), int(r), tuple(int(v) for v in np.clip(cyto, 0, 255)), -1, cv2.LINE_AA)
    n_lobes = 1 + lobes
    for k in range(n_lobes):
        angle = 2 * np.pi * k / n_lobes + rng.uniform(0, 0.3)
        offset = 0 if n_lobes == 1 else r * 0.35
        lr = r * nucleus_frac / (1 if n_lobes == 1 else 1.7)
        cv2.circle(img, (int(cx + offset * np.cos(angle)), int(cy + offset * np.sin(angle))), max(int(lr), 2), nucleus_color, -1, cv2.LINE_AA)
    for _ in range(4 if vacuoles else 0):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 0.85) * r
        cv2.circle(img, (int(cx + d * np.cos(a)), int(cy + d * np.sin(a))), max(int(r * 0.1), 1), (245, 245, 245), -1)
    return r


def make_field(rng, spec: DatasetSpec, path: Path, imgsz: int, field_cls: str, codes: tuple[int, ...], n_rbc: int = 6) -> Field:
    """Draw one field with one WBC of class ``field_cls`` near the centre; write it to ``path``."""
    img = np.full((imgsz, imgsz, 3), (225, 215, 235), np.uint8)
    img = (img + rng.normal(0, 4, img.shape)).clip(0, 255).astype(np.uint8)
    boxes = []
    rbc = spec.class_id("RBC")
    plt_ = spec.class_id("PLT")
    na = tuple(NOT_APPLICABLE for _ in spec.attributes)
    for _ in range(n_rbc if rbc is not None else 0):
        r = imgsz * rng.uniform(0.07, 0.09)
        cx, cy = rng.uniform(r, imgsz - r), rng.uniform(r, imgsz - r)
        cv2.circle(img, (int(cx), int(cy)), int(r), (170, 150, 225), -1, cv2.LINE_AA)
        cv2.circle(img, (int(cx), int(cy)), int(r * 0.45), (195, 180, 235), -1, cv2.LINE_AA)
        boxes.append(Box(rbc, (cx - r, cy - r, cx + r, cy + r), na))
    for _ in range(2 if plt_ is not None else 0):
        r = imgsz * 0.02
        cx, cy = rng.uniform(r, imgsz - r), rng.uniform(r, imgsz - r)
        cv2.circle(img, (int(cx), int(cy)), max(int(r), 1), (140, 60, 120), -1)
        boxes.append(Box(plt_, (cx - r, cy - r, cx + r, cy + r), na))
    cx, cy = imgsz / 2 + rng.uniform(-imgsz * 0.08, imgsz * 0.08), imgsz / 2 + rng.uniform(-imgsz * 0.08, imgsz * 0.08)
    r = _draw_wbc(img, rng, field_cls, spec.names.index(field_cls), codes, cx, cy, imgsz * 0.14)
    boxes.append(Box(spec.names.index(field_cls), (cx - r, cy - r, cx + r, cy + r), codes))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return Field(path, imgsz, imgsz, boxes, spec.names.index(field_cls))


def make_dataset(root: Path, n_train: int = 12, n_val: int = 6, imgsz: int = 128, seed: int = 0,
                 numeric: bool = False, unknown_rate: float = 0.1, spec: DatasetSpec | None = None) -> Dataset:
    """Draw fields into ``root/_drawn/<split>/`` and return them as canonical data.

    ``spec``: draw for another dataset's classes and attributes (e.g. data/WBC_v1.yaml); its
    ``wbc_classes`` take turns as the field's WBC, and 'RBC' / 'PLT' are drawn where declared.
    """
    rng = np.random.default_rng(seed)
    spec = spec or synthetic_spec(root, numeric)
    wbc_classes = spec.wbc_classes
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        fields = []
        for i in range(n):
            cls = wbc_classes[i % len(wbc_classes)]
            codes = tuple(_masked_code(a, rng, unknown_rate) or int(rng.integers(len(a.values))) for a in spec.attributes)
            fields.append(make_field(rng, spec, root / "_drawn" / split / f"{cls}_{split}{i:04d}.png", imgsz, cls, codes))
        splits[split] = fields
    return Dataset(spec, splits)


def _masked_code(attr: Attribute, rng, rate: float) -> int | None:
    """UNKNOWN or NOT_APPLICABLE (whichever the attribute can spell) with probability ``rate``, else None."""
    if rng.random() >= rate:
        return None
    return UNKNOWN if attr.unknown else NOT_APPLICABLE if attr.not_applicable else None


def generate(out: str | Path, fmt: str, spec: DatasetSpec | None = None, **kwargs) -> Path:
    """Write a synthetic raw dataset in ``fmt`` to ``out``; returns its dataset yaml."""
    out = Path(out)
    dataset = make_dataset(out, numeric=fmt in ("attridet", "lld"), spec=spec, **kwargs)
    if fmt == "lld":
        dataset.extra_columns = ("px1", "px2", "py1", "py2")
        for fields in dataset.splits.values():
            for f in fields:
                for b in f.boxes:
                    b.extra = (round(b.xyxy[0] / f.width, 4), round(b.xyxy[2] / f.width, 4), round(b.xyxy[1] / f.height, 4), round(b.xyxy[3] / f.height, 4))
    path = write_dataset(dataset, out, fmt, copy_images=True)
    shutil.rmtree(out / "_drawn")
    return path
