"""Label audits: corrections to a split's ground truth found by looking at the fields, applied to a COCO
ground truth so that a benchmark can report its metric both on the labels as published and as audited.

An audit is a CSV with one row per correction (``data/audits/txl_pbc_val_wbc.csv``)::

    image,class,x1,y1,x2,y2,verdict,note
    027b917d-....jpg,WBC,1,1,64,141,not_this_class,a red cell cut by the corner

``verdict``: ``not_this_class`` (the box is not of this class: removed), ``duplicate`` (a second box on
a cell already boxed: removed), ``unlabelled`` (a cell of this class with no box: added). A removal
must match a ground-truth box of that image and class (IoU ≥ 0.9), or the audit is refused: an audit
written for other labels must not silently do nothing.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path

from wbc.errors import DatasetError

VERDICTS = ("not_this_class", "duplicate", "unlabelled")
COLUMNS = ("image", "class", "x1", "y1", "x2", "y2", "verdict")


@dataclass(frozen=True)
class Correction:
    image: str
    cls: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the field's pixels
    verdict: str
    note: str
    line: int


def read_audit(path: str | Path) -> list[Correction]:
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(path, f"missing column(s) {', '.join(missing)}; expected {','.join(COLUMNS)},note", line=1)
        rows = []
        for line, row in enumerate(reader, start=2):
            if row["verdict"] not in VERDICTS:
                raise DatasetError(path, f"verdict {row['verdict']!r} is not one of {', '.join(VERDICTS)}", line=line)
            try:
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
            except ValueError:
                raise DatasetError(path, "x1, y1, x2, y2 must be numbers", line=line) from None
            if box[2] <= box[0] or box[3] <= box[1]:
                raise DatasetError(path, f"empty box {box}", line=line)
            rows.append(Correction(row["image"], row["class"], box, row["verdict"], row.get("note") or "", line))
    return rows


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def apply_audit(gt: dict, corrections: list[Correction], path: str | Path = "audit") -> tuple[dict, dict]:
    """(a corrected copy of the COCO ground truth ``gt``, counts {verdict: n}). Corrections of images
    outside ``gt`` are refused, as are removals that match no box."""
    gt = copy.deepcopy(gt)
    images = {im["file_name"]: im["id"] for im in gt["images"]}
    categories = {c["name"]: c["id"] for c in gt["categories"]}
    counts = dict.fromkeys(VERDICTS, 0)
    for c in corrections:
        if c.image not in images:
            raise DatasetError(path, f"image {c.image} is not in this split", line=c.line)
        if c.cls not in categories:
            raise DatasetError(path, f"class {c.cls} is not one of {', '.join(categories)}", line=c.line)
        image_id, category_id = images[c.image], categories[c.cls]
        if c.verdict == "unlabelled":
            x1, y1, x2, y2 = c.box
            gt["annotations"].append({"id": max((a["id"] for a in gt["annotations"]), default=0) + 1, "image_id": image_id,
                                      "category_id": category_id, "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                      "iscrowd": 0})
        else:
            def xyxy(a):
                x, y, w, h = a["bbox"]
                return x, y, x + w, y + h

            match = [a for a in gt["annotations"] if a["image_id"] == image_id and a["category_id"] == category_id
                     and _iou(xyxy(a), c.box) >= 0.9]
            if not match:
                raise DatasetError(path, f"no {c.cls} box of {c.image} matches {c.box} (IoU ≥ 0.9): an audit of other labels?",
                                   line=c.line)
            gt["annotations"].remove(match[0])
        counts[c.verdict] += 1
    return gt, counts
