"""The cells cluster.py groups, from either input it takes:

- a crop dataset folder (``crop.py`` output, or any folder of crops with or without class folders): one
  cell per crop file, labelled by its class folder; where the folder's ``manifest.csv`` names each
  crop's source field and box (crop.py writes it) and the field is still there, the cell is also known
  in its field, so that the detector can see it there rather than alone;
- a predict run (``runs/predict/<name>``): one cell per detected WBC in its ``cells.json`` (the field's
  path and the box), unlabelled, with the type and bin predict.py gave it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wbc.classify.crops import crop_box
from wbc.errors import DatasetError, UsageError
from wbc.evaluation.cells import read_field
from wbc.sources import IMAGE_SUFFIXES


@dataclass(frozen=True)
class CellRef:
    name: str  # the crop file, or <field>#<cell index> for a cell of a predict run
    label: str = ""  # its class folder ('' when unlabelled)
    crop: Path | None = None  # the crop file, where there is one
    field: Path | None = None  # the field it was cut from, where known
    box: tuple[float, float, float, float] | None = None  # xyxy in the field's pixels
    predicted: str = ""  # a predict run's bin of the cell (its type, or 'unidentified')


def crop_files(root: Path, split: str | None, max_per_class: int | None, seed: int) -> tuple[list[Path], list[str]]:
    """(crop paths, class folder names or '' for unlabelled crops) under ``root/split``; ``max_per_class``:
    a fixed random subset of each class folder."""
    base = root / split if split else root
    if not base.is_dir():
        raise UsageError(f"{base} is not a folder of crops (crop.py writes <out>/<split>/<class>/)")
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    loose = sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    paths += loose
    labels += [""] * len(loose)
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_class and len(files) > max_per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), max_per_class, replace=False))]
        paths += files
        labels += [folder.name] * len(files)
    if not paths:
        raise UsageError(f"no crops under {base}")
    return paths, labels


def crop_folder_cells(root: Path, split: str | None, max_per_class: int | None = None, seed: int = 0) -> list[CellRef]:
    """The crops under ``root/split``, each with its source field and box where ``root/manifest.csv``
    (crop.py's) records them and the field file exists."""
    paths, labels = crop_files(root, split, max_per_class, seed)
    where = {}
    manifest = root / "manifest.csv"
    if manifest.is_file():
        table = pd.read_csv(manifest, usecols=["file", "source", "x1", "y1", "x2", "y2"])
        where = {(root / r.file).resolve(): (Path(r.source), (r.x1, r.y1, r.x2, r.y2)) for r in table.itertuples()}
    cells = []
    for path, label in zip(paths, labels):
        field, box = where.get(path.resolve(), (None, None))
        if field is not None and not field.is_file():
            field, box = None, None
        cells.append(CellRef(str(path), label, path, field, None if box is None else tuple(map(float, box))))
    return cells


def predict_run_cells(run: Path, classes: list[str] | None = None) -> list[CellRef]:
    """The cells of a predict run's ``cells.json`` whose type is among ``classes`` (default: the run's WBC
    and NRBC classes from its ``summary.json``), in their fields; unlabelled, with predict.py's bin."""
    listing, summary = run / "cells.json", run / "summary.json"
    if not listing.is_file():
        raise UsageError(f"{run} is not a predict run (no cells.json; predict.py writes runs/predict/<name>/)")
    if classes is None:
        if not summary.is_file():
            raise UsageError(f"{run} has no summary.json to name its WBC classes: give --classes")
        s = json.loads(summary.read_text())
        classes = list(s.get("wbc_classes") or []) + list(s.get("nrbc_classes") or [])
    keep = set(classes)
    cells = []
    for entry in json.loads(listing.read_text()):
        field = Path(entry.get("path") or "")
        if not field.is_file():
            raise DatasetError(listing, f"image {entry.get('image')!r}: its field {str(field)!r} is no longer there")
        for row in entry["cells"]:
            if row["class"] in keep:
                cells.append(CellRef(f"{entry['image']}#{row['cell']}", "", None, field,
                                     (float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"])), row.get("bin", row["class"])))
    if not cells:
        raise UsageError(f"{listing}: no cells of the classes {', '.join(sorted(keep))}")
    return cells


def cell_crops(cells: list[CellRef], margin: float = 0.1, size: int | None = None):
    """Each cell's crop: its crop file, or cut from its field as crop.py cuts (``margin``, squared)."""
    field_path, field = None, None
    for c in cells:
        if c.crop is not None:
            yield read_field(c.crop)
            continue
        if c.field != field_path:
            field_path, field = c.field, read_field(c.field)
        yield crop_box(field, c.box, margin, True, size)


def in_fields(cells: list[CellRef]) -> bool:
    return all(c.field is not None and c.box is not None for c in cells)
