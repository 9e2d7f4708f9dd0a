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
    SPLIT_ABSENT,
    BoxSanitizer,
    encode_attributes,
    link_image,
    open_field,
    parse_number,
    read_text,
    require_nonempty,
    split_images,
    write_dataset_yaml,
)
from wbc.schema import Box, Dataset, DatasetSpec, Field

ANNOTATIONS_DEFAULT = "annotations/instances_{split}.json"


COCO_LISTS = ("images", "annotations", "categories")
_REQUIRED = {"images": ("id", "file_name"), "annotations": ("id", "image_id", "category_id", "bbox"), "categories": ("id", "name")}
_SHAPE = "a COCO file is an object with 'images', 'annotations', 'categories'"


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(type(value), "a number")


def _check_entries(doc: dict, key: str, path: Path) -> dict[int, int]:
    """{id: index} of the entries under ``key``. Fatal: an entry that is not an object, lacks a required
    key, or has an id that is not an integer or that an earlier entry has (pycocotools indexes by id,
    so a second entry would silently take the first one's place)."""
    index = {}
    for i, entry in enumerate(doc[key]):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise DatasetError(path, f"{where} is {_json_type(entry)}; expected an object with {list(_REQUIRED[key])}")
        for required in _REQUIRED[key]:
            if required not in entry:
                raise DatasetError(path, f"{where} lacks {required!r}")
        ident = entry["id"]
        if not isinstance(ident, int) or isinstance(ident, bool):
            raise DatasetError(path, f"{where}: id must be an integer, got {ident!r}")
        if ident in index:
            raise DatasetError(path, f"{key}[{index[ident]}] and {where} both have id {ident}; ids in {key!r} must be unique")
        index[ident] = i
    return index


def _load(path: Path) -> COCO:
    try:
        doc = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DatasetError(path, f"invalid JSON: {e.msg}", e.lineno) from None
    if not isinstance(doc, dict):
        raise DatasetError(path, f"top level is {_json_type(doc)}; {_SHAPE}")
    for key in COCO_LISTS:
        if key not in doc:
            raise DatasetError(path, f"no {key!r}; {_SHAPE}")
        if not isinstance(doc[key], list):
            raise DatasetError(path, f"{key!r} is {_json_type(doc[key])}; expected a list")
    image_ids = _check_entries(doc, "images", path)
    category_ids = _check_entries(doc, "categories", path)
    _check_entries(doc, "annotations", path)
    files = {}
    for i, im in enumerate(doc["images"]):
        name = im["file_name"]
        if not isinstance(name, str) or not name:
            raise DatasetError(path, f"images[{i}] (id {im['id']}): file_name must be a file name, got {name!r}")
        if name in files:
            raise DatasetError(path, f"images[{files[name]}] and images[{i}] both name the file {name!r}")
        files[name] = i
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotations[{i}] (id {ann['id']})"
        if not isinstance(ann["image_id"], int) or ann["image_id"] not in image_ids:
            raise DatasetError(path, f"{where} refers to image_id {ann['image_id']!r} that is not in 'images'")
        if not isinstance(ann["category_id"], int) or ann["category_id"] not in category_ids:
            raise DatasetError(path, f"{where} refers to category_id {ann['category_id']!r} that is not in 'categories'")
        if not isinstance(ann["bbox"], list) or len(ann["bbox"]) != 4:
            raise DatasetError(path, f"{where}: bbox must be [x, y, w, h], got {ann['bbox']!r}")
        for key in ("attributes", "extra"):
            if not isinstance(ann.get(key) or {}, dict):
                raise DatasetError(path, f"{where}: {key!r} must be an object {{name: value}}, got {ann[key]!r}")
    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _read_split(spec: DatasetSpec, split: str, extra_names: list[str], problems: ProblemLog) -> list[Field] | Path:
    """The split's fields, or the path of its source (image folder or annotation file) that is absent."""
    ann_path = spec.source_path("annotations", split, ANNOTATIONS_DEFAULT)
    images_on_disk = split_images(spec, split)
    if images_on_disk is None:
        return spec.root / spec.splits[split]
    if not ann_path.is_file():
        return ann_path
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
            name = categories[ann["category_id"]]
            cls = spec.class_id(name)
            if cls is None:
                problems.add(split, "skipped", "unknown class name", ann_path, detail=f"{where}: {name!r}")
                continue
            if ann.get("iscrowd"):
                problems.add(split, "skipped", "crowd annotation", ann_path, detail=where)
                continue
            x, y, w, h = (parse_number(str(v), ann_path, None, f"{where} bbox") for v in ann["bbox"])
            codes = encode_attributes(spec, ann.get("attributes") or {}, name, ann_path, f"{where}: ")
            given = ann.get("extra") or {}
            extra = tuple(parse_number(str(given[k]), ann_path, None, f"{where} extra {k}") if k in given else float("nan") for k in extra_names)
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
        if isinstance(fields, Path):
            problems.add(split, "noted", SPLIT_ABSENT, fields)
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
