"""Plain 5-column YOLO labels plus one attribute CSV per split, one row per image (OI-PBC + WBCAtt).

Source keys:
    labels:          label folder template (default: the image folder with 'images' -> 'labels')
    attributes_csv:  CSV template, e.g. ``attributes/pbc_attr_v1_{split}.csv``; columns: the image
                     column and one column per declared attribute
    image_column:    the CSV column holding the image file name (default ``image``)
    field_class:     ``filename_prefix``: the text before the first ``_`` of the file name is the
                     class of the whole field (PBC's expert label, authoritative over the boxes)

Which box an attribute row belongs to: the box of the field's class nearest the image centre.
When no box has the field's class and exactly one WBC-type box exists, that box is relabelled to
the field's class (counted as repaired); when there is no WBC-type box, or several of other
classes, the field is excluded (counted): neither its boxes nor its label can be trusted.
Without ``field_class``, the WBC-type box nearest the centre takes the row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from wbc.errors import DatasetError, ProblemLog
from wbc.formats import yolo
from wbc.formats.base import SPLIT_ABSENT, read_table, require_nonempty, write_dataset_yaml
from wbc.schema import Box, Dataset, DatasetSpec, Field

FIELD_CLASS_MODES = (None, "filename_prefix")


def _nearest_centre(field: Field, boxes: list[Box]) -> Box:
    cx, cy = field.width / 2, field.height / 2
    return min(boxes, key=lambda b: ((b.xyxy[0] + b.xyxy[2]) / 2 - cx) ** 2 + ((b.xyxy[1] + b.xyxy[3]) / 2 - cy) ** 2)


def _field_class(spec: DatasetSpec, field: Field) -> int:
    prefix = field.name.split("_", 1)[0]
    cls = spec.class_id(prefix)
    if cls is None:
        raise DatasetError(field.image, f"field label {prefix!r} (file-name prefix) is not a class in the dataset yaml")
    return cls


def _attribute_box(spec: DatasetSpec, field: Field, split: str, problems: ProblemLog) -> Box | None | bool:
    """The box that takes the field's attribute row; None: no such box; False: exclude the field."""
    wbc = [b for b in field.boxes if spec.names[b.cls] in spec.wbc_classes]
    if field.field_class is None:
        if len(wbc) > 1:
            problems.add(split, "noted", "several WBC boxes (attributes go to the one nearest the centre)", field.image)
        return _nearest_centre(field, wbc) if wbc else None
    matching = [b for b in wbc if b.cls == field.field_class]
    if matching:
        if len(matching) > 1:
            problems.add(split, "noted", "several boxes of the field's class (attributes go to the one nearest the centre)", field.image)
        return _nearest_centre(field, matching)
    label = spec.names[field.field_class]
    if len(wbc) == 1:
        box = wbc[0]
        problems.add(split, "repaired", "WBC box class disagrees with the field label (relabelled)", field.image,
                     detail=f"{spec.names[box.cls]} -> {label}")
        box.cls = field.field_class
        box.attributes = tuple(a.absent_code(label) for a in spec.attributes)
        return box
    why = "no WBC box" if not wbc else f"{len(wbc)} WBC boxes, none of class {label}"
    problems.add(split, "skipped", "field without a WBC box of its labelled class", field.image, detail=why)
    return False


def _read_attribute_csv(spec: DatasetSpec, split: str, csv_path: Path, fields: dict[str, Field],
                        targets: dict[str, Box | None], excluded: set[str], problems: ProblemLog) -> None:
    image_column = spec.source.get("image_column", "image")
    rows = read_table(csv_path, [image_column, *(a.name for a in spec.attributes)])
    if not rows:
        problems.add(split, "noted", "attribute CSV has a header only (attributes unknown)", csv_path)
    seen = set()
    for line, row in rows:
        name = row[image_column].strip()
        if name in seen:
            problems.add(split, "skipped", "duplicate attribute row", csv_path, line, name)
            continue
        seen.add(name)
        if name in excluded:
            problems.add(split, "skipped", "attribute row not attached: field excluded", csv_path, line, name)
            continue
        if name not in fields:
            problems.add(split, "skipped", "attribute row not attached: no such image in the split", csv_path, line, name)
            continue
        box = targets.get(name)
        if box is None:
            problems.add(split, "skipped", "attribute row not attached: no WBC box in the field", csv_path, line, name)
            continue
        codes = []
        for attr in spec.attributes:
            token = row[attr.name]
            code = attr.encode(token)
            if code is None:
                raise DatasetError(csv_path, f"attribute {attr.name!r} value {token!r} is not in the declared set {list(attr.values)}", line)
            codes.append(code)
        box.attributes = tuple(codes)


def read(spec: DatasetSpec) -> Dataset:
    mode = spec.source.get("field_class")
    if mode not in FIELD_CLASS_MODES:
        raise DatasetError(spec.yaml_path, f"source.field_class must be one of {FIELD_CLASS_MODES}, got {mode!r}")
    problems = ProblemLog()
    splits = {}
    for split in spec.splits:
        fields = yolo.read_split(spec, split, 5, None, problems)
        if fields is None:
            problems.add(split, "noted", SPLIT_ABSENT, spec.root / spec.splits[split])
            continue
        kept, targets, excluded = [], {}, set()
        for field in fields:
            if mode == "filename_prefix":
                field.field_class = _field_class(spec, field)
            box = _attribute_box(spec, field, split, problems)
            if box is False:
                excluded.add(field.name)
                continue
            targets[field.name] = box
            kept.append(field)
        csv_path = spec.source_path("attributes_csv", split)
        if csv_path is not None and spec.attributes:
            if csv_path.is_file():
                _read_attribute_csv(spec, split, csv_path, {f.name: f for f in kept}, targets, excluded, problems)
            else:
                problems.add(split, "noted", "attribute CSV absent (attributes unknown)", csv_path)
        splits[split] = kept
    dataset = Dataset(spec, splits, problems)
    require_nonempty(dataset)
    return dataset


def write(dataset: Dataset, out: Path, copy_images: bool = False) -> Path:
    """Write 5-column labels and one attribute CSV per split (one box per field may carry attributes)."""
    spec = dataset.spec
    has_field_class = any(f.field_class is not None for fs in dataset.splits.values() for f in fs)
    for split, fields in dataset.splits.items():
        yolo.write_split(fields, out / "images" / split, out / "labels" / split, lambda b: [], copy_images)
        rows = []
        for f in fields:
            if has_field_class and (f.field_class is None or f.name.split("_", 1)[0] != spec.names[f.field_class]):
                raise ValueError(f"{f.image}: yolo_csv keeps the field class in the file-name prefix; "
                                 f"this file name does not start with its field class")
            carriers = [b for b in f.boxes if any(c != a.absent_code(spec.names[b.cls]) for a, c in zip(spec.attributes, b.attributes))]
            if len(carriers) > 1:
                raise ValueError(f"{f.image}: yolo_csv holds attributes for one box per field, this field has {len(carriers)}")
            if carriers:
                rows.append({"image": f.name, **{a.name: a.decode(c) for a, c in zip(spec.attributes, carriers[0].attributes)}})
        pd.DataFrame(rows, columns=["image", *(a.name for a in spec.attributes)]).to_csv(out / f"attributes_{split}.csv", index=False)
    source = {"attributes_csv": "attributes_{split}.csv", "image_column": "image"}
    if has_field_class:
        source["field_class"] = "filename_prefix"
    return write_dataset_yaml(spec, out, "yolo_csv", {s: f"images/{s}" for s in dataset.splits}, source)
