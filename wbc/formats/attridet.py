"""AttriDet / LeukemiaAttri label rows, and the LLD variant.

attridet: ``cls x y w h a0 a1 .. aK`` -- one column per declared attribute, in yaml order
          (LeukemiaAttri: 12 columns, the first attribute being the unused cell size).
lld:      ``cls x y w h px1 px2 py1 py2 a1 .. aK`` -- four point columns before the attributes;
          they are kept as the box's ``extra`` numbers so that a round trip is lossless.
Box columns are normalised to the image size, as in YOLO.
"""

from __future__ import annotations

from pathlib import Path

from wbc.errors import DatasetError, ProblemLog
from wbc.formats import yolo
from wbc.formats.base import SPLIT_ABSENT, numeric_token, parse_number, require_nonempty, write_dataset_yaml
from wbc.schema import Box, Dataset, DatasetSpec

LLD_EXTRA = ("px1", "px2", "py1", "py2")


def _extra_names(spec: DatasetSpec) -> tuple[str, ...]:
    return LLD_EXTRA if spec.format == "lld" else ()


def read(spec: DatasetSpec) -> Dataset:
    extra_names = _extra_names(spec)
    ncols = 5 + len(extra_names) + len(spec.attributes)

    def parse_extra(tokens: list[str], path: Path, line: int, class_name: str):
        extra = tuple(parse_number(t, path, line, name) for t, name in zip(tokens, extra_names))
        codes = []
        for attr, token in zip(spec.attributes, tokens[len(extra_names):]):
            code = attr.encode(numeric_token(token))
            if code is None:
                raise DatasetError(path, f"attribute {attr.name!r} value {token!r} is not in the declared set "
                                         f"{list(attr.values)} (unknown: {list(attr.unknown)}, not applicable: {list(attr.not_applicable)})", line)
            codes.append(code)
        return tuple(codes), extra

    problems = ProblemLog()
    splits = {}
    for split in spec.splits:
        fields = yolo.read_split(spec, split, ncols, parse_extra, problems)
        if fields is None:
            problems.add(split, "noted", SPLIT_ABSENT, spec.root / spec.splits[split])
            continue
        splits[split] = fields
    dataset = Dataset(spec, splits, problems, extra_names)
    require_nonempty(dataset)
    return dataset


def write(dataset: Dataset, out: Path, lld: bool = False, copy_images: bool = False) -> Path:
    """Write AttriDet (or LLD) rows under ``out/{images,labels}/<split>/`` and a dataset yaml."""
    spec = dataset.spec
    if lld and dataset.extra_columns != LLD_EXTRA:
        raise ValueError(f"LLD rows need the point columns {LLD_EXTRA}; this dataset has {dataset.extra_columns or 'none'}")

    def tail(box: Box) -> list[str]:
        points = [f"{v:g}" for v in box.extra] if lld else []
        try:
            return points + [a.decode(c) for a, c in zip(spec.attributes, box.attributes)]
        except ValueError as e:
            raise ValueError(f"cannot write AttriDet rows: {e}; declare an 'unknown' or 'not_applicable' token") from None

    for split, fields in dataset.splits.items():
        yolo.write_split(fields, out / "images" / split, out / "labels" / split, tail, copy_images)
    return write_dataset_yaml(spec, out, "lld" if lld else "attridet", {s: f"images/{s}" for s in dataset.splits}, {})
