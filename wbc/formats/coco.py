"""COCO JSON with per-annotation attributes (CVAT-style ``"attributes": {name: value}``).

Source keys:
    annotations: JSON template, e.g. ``annotations/instances_{split}.json``
The split's yaml value is its image folder; ``file_name`` is relative to it. Categories are
matched to classes by name. Optional fields this project writes and reads back: an image's
``field_class`` (class name) and an annotation's ``extra`` ({column: number}).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pycocotools.coco import COCO

from wbc.errors import DatasetError, ProblemLog
from wbc.formats.base import (
    BoxSanitizer,
    encode_attributes,
    link_image,
    open_field,
    parse_number,
    require_nonempty,
    split_images,
    write_dataset_yaml,
)
from wbc.schema import Box, Dataset, DatasetSpec, Field

ANNOTATIONS_DEFAULT = "annotations/instances_{split}.json"


def _load(path: Path) -> COCO:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"invalid JSON: {e.msg}", e.lineno) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DatasetError(path, f"COCO file needs a list under {key!r}")
    image_ids = {im.get("id") for im in doc["images"]}
    for i, ann in enumerate(doc["annotations"]):
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise DatasetError(path, f"annotations[{i}] lacks {key!r}")
        if ann["image_id"] not in image_ids:
            raise DatasetError(path, f"annotations[{i}] (id {ann['id']}) refers to image_id {ann['image_id']} that is not in 'images'")
        if not isinstance(ann["bbox"], list) or len(ann["bbox"]) != 4:
            raise DatasetError(path, f"annotations[{i}] (id {ann['id']}): bbox must be [x, y, w, h], got {ann['bbox']!r}")
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _read_split(spec: DatasetSpec, split: str, extra_names: list[str], problems: ProblemLog) -> list[Field] | None:
    ann_path = spec.source_path("annotations", split, ANNOTATIONS_DEFAULT)
    images_on_disk = split_images(spec, split)
    if images_on_disk is None or not ann_path.is_file():
        return None
    coco = _load(ann_path)
    image_dir = spec.root / spec.splits[split]
    categories = {c["id"]: c.get("name") for c in coco.dataset["categories"]}
    sanitize = BoxSanitizer(problems, split)
    fields, listed = [], set()
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        path = image_dir / info["file_name"]
        listed.add(path.resolve())
        field = open_field(path, split, problems, "labels without image")
        if field is None:
            continue
        width, height = field.width, field.height
        if (info.get("width"), info.get("height")) not in ((width, height), (None, None)):
            problems.add(split, "repaired", "image size in annotations differs from the file (file size used)", ann_path,
                         detail=f"{info['file_name']}: {info.get('width')}x{info.get('height')} vs {width}x{height}")
        field_class = info.get("field_class")
        if field_class is not None and spec.class_id(field_class) is None:
            raise DatasetError(ann_path, f"image {info['file_name']}: field_class {field_class!r} is not a class in the dataset yaml")
        boxes = []
        for ann in coco.imgToAnns.get(img_id, []):
            where = f"annotation id {ann['id']}"
            name = categories.get(ann["category_id"])
            if name is None:
                raise DatasetError(ann_path, f"{where}: category_id {ann['category_id']} is not in 'categories'")
            cls = spec.class_id(name)
            if cls is None:
                problems.add(split, "skipped", "unknown class name", ann_path, detail=f"{where}: {name!r}")
                continue
            if ann.get("iscrowd"):
                problems.add(split, "skipped", "crowd annotation", ann_path, detail=where)
                continue
            x, y, w, h = (parse_number(str(v), ann_path, None, f"{where} bbox") for v in ann["bbox"])
            codes = encode_attributes(spec, ann.get("attributes") or {}, name, ann_path, f"{where}: ")
            extra = tuple(float((ann.get("extra") or {}).get(k, float("nan"))) for k in extra_names)
            boxes.append((Box(cls, (x, y, x + w, y + h), codes, extra), None))
        fields.append(Field(path, width, height, sanitize(boxes, width, height, f"{ann_path} [{info['file_name']}]"),
                            None if field_class is None else spec.class_id(field_class)))
    for path in images_on_disk:
        if path.resolve() not in listed:
            problems.add(split, "skipped", "image without labels (not in the annotation file)", path)
    return fields


def read(spec: DatasetSpec) -> Dataset:
    extra_names = list(spec.source.get("extra_columns") or [])
    problems = ProblemLog()
    splits = {}
    for split in spec.splits:
        fields = _read_split(spec, split, extra_names, problems)
        if fields is None:
            problems.add(split, "noted", "split source absent (split left out)", spec.source_path("annotations", split, ANNOTATIONS_DEFAULT))
            continue
        splits[split] = fields
    dataset = Dataset(spec, splits, problems, tuple(extra_names))
    require_nonempty(dataset)
    return dataset


def to_coco(dataset: Dataset, split: str) -> dict:
    """One split as a COCO dict (bbox ``[x, y, w, h]`` in pixels; category ids 1..nc)."""
    spec = dataset.spec
    images, annotations = [], []
    for img_id, f in enumerate(dataset.splits[split], 1):
        image = {"id": img_id, "file_name": f.name, "width": f.width, "height": f.height}
        if f.field_class is not None:
            image["field_class"] = spec.names[f.field_class]
        images.append(image)
        for b in f.boxes:
            x1, y1, x2, y2 = b.xyxy
            class_name = spec.names[b.cls]
            ann = {"id": len(annotations) + 1, "image_id": img_id, "category_id": b.cls + 1,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                   "attributes": {a.name: a.decode(c) for a, c in zip(spec.attributes, b.attributes) if c != a.absent_code(class_name)}}
            if dataset.extra_columns:
                ann["extra"] = dict(zip(dataset.extra_columns, b.extra))
            annotations.append(ann)
    categories = [{"id": i + 1, "name": n, "supercategory": "wbc" if n in spec.wbc_classes else "other"} for i, n in enumerate(spec.names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def write(dataset: Dataset, out: Path, copy_images: bool = False) -> Path:
    """Write ``out/annotations/instances_<split>.json`` and ``out/images/<split>/`` and a dataset yaml."""
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, fields in dataset.splits.items():
        for f in fields:
            link_image(f.image, out / "images" / split / f.name, copy_images)
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(to_coco(dataset, split)))
    source = {"annotations": ANNOTATIONS_DEFAULT}
    if dataset.extra_columns:
        source["extra_columns"] = list(dataset.extra_columns)
    return write_dataset_yaml(dataset.spec, out, "coco", {s: f"images/{s}" for s in dataset.splits}, source)
