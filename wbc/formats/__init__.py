"""One importer and one exporter per annotation format; nothing else parses raw annotation files.

``read_dataset(spec)`` dispatches on ``spec.format``; ``write_dataset(dataset, out, fmt)`` writes a
self-contained copy (images linked, annotations, ``dataset.yaml``) in any supported format.
"""

from __future__ import annotations

from pathlib import Path

from wbc.errors import DatasetError
from wbc.formats import attridet, coco, merge, voc, yolo_csv
from wbc.formats.base import SPLIT_ABSENT
from wbc.schema import Dataset, DatasetSpec

SOURCE_KEYS = {
    "attridet": {"labels"},
    "lld": {"labels"},
    "coco": {"annotations", "extra_columns"},
    "voc": {"annotations", "images", "image_attributes"},
    "yolo": {"labels"},
    "yolo_csv": {"labels", "attributes_csv", "image_column", "field_class"},
    "merge": set(),
}
_READERS = {"attridet": attridet.read, "lld": attridet.read, "yolo": attridet.read, "merge": merge.read, "coco": coco.read, "voc": voc.read, "yolo_csv": yolo_csv.read}


def read_dataset(spec: DatasetSpec) -> Dataset:
    """The canonical form of ``spec``'s raw data. Fatal: the dataset root is missing, or none of the
    declared splits is there (a missing split among others is noted and left out)."""
    unknown = sorted(set(spec.source) - SOURCE_KEYS[spec.format])
    if unknown:
        raise DatasetError(spec.yaml_path, f"source: unknown key(s) {unknown} for format {spec.format!r}; allowed: {sorted(SOURCE_KEYS[spec.format])}")
    if not spec.root.is_dir():
        raise DatasetError(spec.yaml_path, f"dataset root not found: {spec.root} ({spec.root_from})")
    dataset = _READERS[spec.format](spec)
    if not dataset.splits:
        absent = [f"{p.split}: {p.path} not found" for p in dataset.problems.problems if p.reason == SPLIT_ABSENT]
        raise DatasetError(spec.yaml_path, f"no split found ({'; '.join(absent)})")
    return dataset


def write_dataset(dataset: Dataset, out: str | Path, fmt: str, copy_images: bool = False) -> Path:
    """Export ``dataset`` to ``out`` in format ``fmt``; returns the written dataset yaml."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt in ("attridet", "lld", "yolo"):  # plain YOLO rows are AttriDet rows without attribute columns
        return attridet.write(dataset, out, lld=fmt == "lld", copy_images=copy_images)
    writers = {"coco": coco.write, "voc": voc.write, "yolo_csv": yolo_csv.write}
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(SOURCE_KEYS)}")
    return writers[fmt](dataset, out, copy_images=copy_images)
