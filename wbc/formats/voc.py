"""Pascal VOC XML (one file per image), optionally joined with a per-image label table (BCCD).

Source keys:
    annotations: XML folder (default ``Annotations``)
    images:      image folder for id lists (default ``JPEGImages``)
    image_attributes: optional per-image table giving attribute values to the boxes of one class:
        csv:           path of the CSV
        image_column:  column naming the image
        image_format:  how that column names an image stem, e.g. ``BloodImage_{:05d}`` (default ``{}``)
        box_class:     the class whose boxes take the values (e.g. ``WBC``)
        columns:       {CSV column: attribute name}
      A cell may list several values (``NEUTROPHIL, EOSINOPHIL``). Values go to the image's boxes
      of ``box_class`` only when that is unambiguous: every listed value is the same and the image
      has as many such boxes as values listed (or one value and one box). Otherwise the attribute
      stays unknown; each outcome is counted.
The split's yaml value is an ``ImageSets`` id list or an image folder. Box corners are read as
pixel coordinates as written. Per-object attributes may also be given in CVAT style:
``<attributes><attribute><name>..</name><value>..</value></attribute></attributes>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from wbc.errors import DatasetError, ProblemLog
from wbc.formats.base import (
    SPLIT_ABSENT,
    BoxSanitizer,
    encode_attributes,
    link_image,
    open_field,
    parse_number,
    read_table,
    read_text,
    require_nonempty,
    split_images,
    write_dataset_yaml,
)
from wbc.schema import Box, Dataset, DatasetSpec, Field


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.fromstring(read_text(path))
    except ET.ParseError as e:
        raise DatasetError(path, f"malformed XML: {e.msg if hasattr(e, 'msg') else e}", e.position[0]) from None


def _read_objects(spec: DatasetSpec, xml_path: Path, field: Field, split: str, problems: ProblemLog) -> list[tuple[Box, None]]:
    root = _parse_xml(xml_path)
    size = root.find("size")
    if size is not None and size.findtext("width") is not None and size.findtext("height") is not None:
        written = tuple(parse_number(size.findtext(k).strip(), xml_path, None, f"<size> {k}") for k in ("width", "height"))
        if written != (field.width, field.height):  # boxes are read as written; the file's size is the one used
            problems.add(split, "repaired", "image size in annotations differs from the file (file size used)", xml_path,
                         detail=f"{written[0]:g}x{written[1]:g} vs {field.width}x{field.height}")
    boxes = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object {i} ({name or 'no name'})"
        cls = spec.class_id(name)
        if cls is None:
            problems.add(split, "skipped", "unknown class name", xml_path, detail=f"{where}")
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(xml_path, f"{where}: no <bndbox>")
        coords = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = bndbox.findtext(key)
            if text is None:
                raise DatasetError(xml_path, f"{where}: <bndbox> lacks <{key}>")
            coords.append(parse_number(text.strip(), xml_path, None, f"{where} {key}"))
        given = {(a.findtext("name") or "").strip(): (a.findtext("value") or "").strip() for a in obj.iter("attribute")}
        boxes.append((Box(cls, tuple(coords), encode_attributes(spec, given, name, xml_path, f"{where}: ")), None))
    return boxes


class ImageAttributeTable:
    """The ``image_attributes`` join: per-image values for the boxes of one class."""

    def __init__(self, spec: DatasetSpec, config: dict):
        self.spec = spec
        keys = ("csv", "image_column", "box_class", "columns")
        if not isinstance(config, dict) or not isinstance(config.get("columns"), dict):
            raise DatasetError(spec.yaml_path, f"source.image_attributes: a mapping with {list(keys)} ('columns': {{CSV column: attribute}}), "
                                               f"got {config!r}")
        for key in keys:
            if key not in config:
                raise DatasetError(spec.yaml_path, f"source.image_attributes needs {key!r}")
        self.path = spec.root / str(config["csv"])
        if not self.path.is_file():
            raise DatasetError(self.path, "image attribute table not found")
        self.box_class = spec.class_id(config["box_class"])
        if self.box_class is None:
            raise DatasetError(spec.yaml_path, f"source.image_attributes.box_class {config['box_class']!r} is not a class")
        self.columns = {}
        for column, attr_name in config["columns"].items():
            index = next((i for i, a in enumerate(spec.attributes) if a.name == attr_name), None)
            if index is None:
                raise DatasetError(spec.yaml_path, f"source.image_attributes.columns: {attr_name!r} is not a declared attribute")
            self.columns[column] = index
        rows = read_table(self.path, [config["image_column"], *self.columns])
        fmt = str(config.get("image_format", "{}"))
        self.rows: dict[str, tuple[int, dict]] = {}
        for line, row in rows:
            key = row[config["image_column"]].strip()
            try:
                stem = fmt.format(int(key)) if "{:" in fmt else fmt.format(key)
            except (ValueError, KeyError, IndexError):
                raise DatasetError(self.path, f"image id {key!r} does not fit image_format {fmt!r}", line) from None
            if stem in self.rows:
                raise DatasetError(self.path, f"second row for image {stem!r} (first at line {self.rows[stem][0]})", line)
            self.rows[stem] = (line, {c: row[c] for c in self.columns})
        self.used: set[str] = set()

    def apply(self, field: Field, split: str, problems: ProblemLog) -> None:
        stem = field.image.stem
        targets = [b for b in field.boxes if b.cls == self.box_class]
        class_name = self.spec.names[self.box_class]
        if stem not in self.rows:
            problems.add(split, "noted", f"{class_name} attribute: no table row for the image", field.image, detail=f"{len(targets)} {class_name} box(es)")
            return
        self.used.add(stem)
        line, cells = self.rows[stem]
        for column, index in self.columns.items():
            attr = self.spec.attributes[index]
            values = [v.strip() for v in cells[column].split(",") if v.strip()]
            for v in values:
                if attr.encode(v) is None:
                    raise DatasetError(self.path, f"column {column!r}: value {v!r} is not in the declared set {list(attr.values)} of {attr.name!r}", line)
            if not targets:
                problems.add(split, "noted", f"{attr.name}: image has no {class_name} box", self.path, line)
            elif not values:
                problems.add(split, "noted", f"{attr.name}: blank in the table (unknown)", self.path, line, f"{len(targets)} box(es)")
            elif len(set(values)) > 1:
                problems.add(split, "noted", f"{attr.name}: different values listed, boxes cannot be told apart (unknown)", self.path, line, ", ".join(values))
            elif len(values) != len(targets):
                problems.add(split, "noted", f"{attr.name}: number of values differs from the number of {class_name} boxes (unknown)", self.path, line,
                             f"{len(values)} value(s), {len(targets)} box(es)")
            else:
                code = attr.encode(values[0])
                for b in targets:
                    b.attributes = tuple(code if i == index else c for i, c in enumerate(b.attributes))

    def report_unused(self, problems: ProblemLog) -> None:
        for stem, (line, _) in sorted(self.rows.items(), key=lambda kv: kv[1][0]):
            if stem not in self.used:
                problems.add("all", "noted", "table row without an image in any split", self.path, line, stem)


def read(spec: DatasetSpec) -> Dataset:
    problems = ProblemLog()
    table = ImageAttributeTable(spec, spec.source["image_attributes"]) if spec.source.get("image_attributes") else None
    splits = {}
    for split in spec.splits:
        images = split_images(spec, split, "images")
        if images is None:
            problems.add(split, "noted", SPLIT_ABSENT, spec.root / spec.splits[split])
            continue
        ann_dir = spec.source_path("annotations", split, "Annotations")
        sanitize = BoxSanitizer(problems, split)
        fields = []
        for image in images:
            xml_path = ann_dir / f"{image.stem}.xml"
            field = open_field(image, split, problems, "labels without image" if xml_path.exists() else "listed image missing")
            if field is None:
                continue
            if not xml_path.exists():
                problems.add(split, "noted", "image without labels (kept as background)", image)
                fields.append(field)
                continue
            field.boxes = sanitize(_read_objects(spec, xml_path, field, split, problems), field.width, field.height, xml_path)
            if table is not None:
                table.apply(field, split, problems)
            fields.append(field)
        splits[split] = fields
    if table is not None:
        table.report_unused(problems)
    dataset = Dataset(spec, splits, problems)
    require_nonempty(dataset)
    return dataset


def _to_xml(dataset: Dataset, field: Field) -> str:
    spec = dataset.spec
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = field.name
    size = ET.SubElement(root, "size")
    for key, value in (("width", field.width), ("height", field.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for b in field.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = spec.names[b.cls]
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), b.xyxy):
            ET.SubElement(bndbox, key).text = f"{value:g}" if float(value).is_integer() else repr(float(value))
        written = [(a, c) for a, c in zip(spec.attributes, b.attributes) if c != a.absent_code(spec.names[b.cls])]
        if written:
            attrs = ET.SubElement(obj, "attributes")
            for a, c in written:
                node = ET.SubElement(attrs, "attribute")
                ET.SubElement(node, "name").text = a.name
                ET.SubElement(node, "value").text = a.decode(c)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write(dataset: Dataset, out: Path, copy_images: bool = False) -> Path:
    """Write ``out/{Annotations,JPEGImages,ImageSets/Main}`` and a dataset yaml."""
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, fields in dataset.splits.items():
        for f in fields:
            link_image(f.image, out / "JPEGImages" / f.name, copy_images)
            (out / "Annotations" / f"{f.image.stem}.xml").write_text(_to_xml(dataset, f))
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{f.image.stem}\n" for f in fields))
    source = {"annotations": "Annotations", "images": "JPEGImages"}
    return write_dataset_yaml(dataset.spec, out, "voc", {s: f"ImageSets/Main/{s}.txt" for s in dataset.splits}, source)
