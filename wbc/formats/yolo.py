"""YOLO label folders (``cls cx cy w h [more columns]``, normalised to the image size): the
layout shared by plain YOLO, AttriDet/LeukemiaAttri and LLD label files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wbc.errors import DatasetError, ProblemLog
from wbc.formats.base import BoxSanitizer, link_image, open_field, parse_class_id, parse_number, read_text, split_images
from wbc.schema import Box, DatasetSpec, Field

# parse_extra(tokens after the 5 box columns, path, line, class name) -> (attribute codes, extra numbers)
ExtraParser = Callable[[list[str], Path, int, str], tuple[tuple[int, ...], tuple[float, ...]]]


def label_dir(spec: DatasetSpec, split: str) -> Path:
    """``source.labels`` if given, else the split's image folder with its last 'images' made 'labels'."""
    explicit = spec.source_path("labels", split)
    if explicit is not None:
        return explicit
    parts = list((spec.root / spec.splits[split]).parts)
    if "images" not in parts:
        raise DatasetError(spec.yaml_path, f"{split}: cannot infer the label folder (no 'images' in the path); set source.labels")
    i = len(parts) - 1 - parts[::-1].index("images")
    parts[i] = "labels"
    return Path(*parts)


def read_rows(path: Path, ncols: int, spec: DatasetSpec, parse_extra: ExtraParser | None):
    """Rows of one label file -> [(Box in normalised xyxy, line)]. Fatal: wrong column count,
    non-numbers, class id out of range."""
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != ncols:
            raise DatasetError(path, f"expected {ncols} columns, found {len(tokens)}", lineno)
        cls = parse_class_id(tokens[0], len(spec.names), path, lineno)
        cx, cy, w, h = (parse_number(t, path, lineno, name) for t, name in zip(tokens[1:5], ("x_center", "y_center", "width", "height")))
        attrs, extra = parse_extra(tokens[5:], path, lineno, spec.names[cls]) if parse_extra else (
            tuple(a.absent_code(spec.names[cls]) for a in spec.attributes), ())
        rows.append((Box(cls, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), attrs, extra), lineno))
    return rows


def read_split(spec: DatasetSpec, split: str, ncols: int, parse_extra: ExtraParser | None, problems: ProblemLog) -> list[Field] | None:
    """All fields of a split with their boxes in pixels; None when the split's source is absent."""
    images = split_images(spec, split)
    if images is None:
        return None
    labels = label_dir(spec, split)
    sanitize = BoxSanitizer(problems, split)
    fields, stems = [], set()
    for image in images:
        stems.add(image.stem)
        field = open_field(image, split, problems)
        if field is None:
            continue
        label_path = labels / f"{image.stem}.txt"
        if not label_path.exists():
            problems.add(split, "noted", "image without labels (kept as background)", image)
            fields.append(field)
            continue
        w, h = field.width, field.height
        rows = [(Box(b.cls, (b.xyxy[0] * w, b.xyxy[1] * h, b.xyxy[2] * w, b.xyxy[3] * h), b.attributes, b.extra), line)
                for b, line in read_rows(label_path, ncols, spec, parse_extra)]
        field.boxes = sanitize(rows, w, h, label_path)
        fields.append(field)
    if labels.is_dir():
        for orphan in sorted(p for p in labels.glob("*.txt") if p.stem not in stems):
            problems.add(split, "skipped", "labels without image", orphan)
    return fields


def format_row(box: Box, width: int, height: int, tail: list[str]) -> str:
    x1, y1, x2, y2 = box.xyxy
    numbers = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
    return " ".join([str(box.cls), *(f"{v:.6f}" for v in numbers), *tail])


def write_split(fields: list[Field], image_out: Path, label_out: Path, tail: Callable[[Box], list[str]], copy_images: bool) -> None:
    label_out.mkdir(parents=True, exist_ok=True)
    image_out.mkdir(parents=True, exist_ok=True)
    for f in fields:
        link_image(f.image, image_out / f.name, copy_images)
        rows = [format_row(b, f.width, f.height, tail(b)) for b in f.boxes]
        (label_out / f"{f.image.stem}.txt").write_text("".join(r + "\n" for r in rows))
