"""One dataset made of several others, in one class list: train one model on every source.

    name: wbc_multisource
    format: merge
    names: [BA, BNE, EO, ERB, LY, MMY, MO, MY, PLT, PMY, RBC, SNE]   # the model's classes
    label_sets:                    # partly known types: "one of these classes"
      WBC: [BA, BNE, EO, ERB, LY, MMY, MO, MY, PMY, SNE]
      NEUTROPHIL: [BNE, SNE]
    parts:
      - data: pbc_wbcatt.yaml      # a dataset yaml, relative to this one
        max_fields: {train: 2000}  # optional: a fixed subset (by a hash of the file name) of a split
        exclude_origins: [BCCD]    # optional: leave a source's fields out (leave-one-source-out)
      - data: txl_pbc.yaml
        classes: {WBC: WBC, RBC: RBC, Platelet: PLT}   # part class -> class or label set (null: drop)
      - data: bccd.yaml
        classes: {RBC: RBC, WBC: WBC, Platelets: PLT}
        typed_by:                  # a box whose attribute is known takes the class it names
          attribute: wbc_subtype
          classes: {NEUTROPHIL: NEUTROPHIL, EOSINOPHIL: EO, LYMPHOCYTE: LY, MONOCYTE: MO, BASOPHIL: BA}

Label sets follow the classes in the merged class list (ids ``len(names)`` on), so that a WBC box of
unknown type is a box of class ``WBC``: the detector's loss reads it as "some WBC type" (see
:mod:`wbc.partial_labels`). A part without ``classes`` keeps its own class names, which must all be
merged classes. Attributes are the union of the parts' (by name, with the same values); a part's box
lacking one of them has it unknown. Each field keeps the origin its own part gives it; a file name
that an earlier part already has is prefixed with the part's name.

Public datasets copy each other's fields (TXL-PBC holds re-annotated BCCD and PBC fields, some of
them from the other datasets' val splits), so a train field showing the same picture as a field of
any other split is left out of train (counted, by part): val stays unseen.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from wbc.errors import DatasetError, ProblemLog
from wbc.schema import Box, Dataset, DatasetSpec, Field

_PART_KEYS = {"data", "classes", "typed_by", "max_fields", "exclude_origins"}


@dataclass
class Part:
    spec: DatasetSpec
    classes: dict[str, str | None]  # part class -> merged class or label set (None: dropped)
    typed_by: tuple[str, dict[str, str]] | None = None  # (attribute, value -> merged class or set)
    max_fields: dict[str, int] = field(default_factory=dict)
    exclude_origins: tuple[str, ...] = ()  # fields of these origins are left out (leave-one-source-out)


def parse_merge(raw: dict, yaml_path: Path, names: list[str]) -> tuple[list[Part], dict[str, list[str]], list[dict]]:
    """(parts, label sets, merged attribute declarations) of a merge yaml. The label sets' names are
    appended to ``names`` (in place): they are class ids of the merged labels."""
    from wbc.schema import load_spec

    sets = raw.get("label_sets") or {}
    if not isinstance(sets, dict):
        raise DatasetError(yaml_path, "label_sets: a mapping of name -> list of classes")
    label_sets = {}
    for name, members in sets.items():
        if not isinstance(members, list):
            raise DatasetError(yaml_path, f"label_sets: {name}: a list of classes expected, got {members!r}")
        unknown = [m for m in members if m not in names]
        if unknown or not members or name in names:
            raise DatasetError(yaml_path, f"label_sets: {name}: needs a new name and classes from names (unknown: {unknown})")
        label_sets[str(name)] = [str(m) for m in members]
    targets = set(names) | set(label_sets)
    parts_raw = raw.get("parts")
    if not parts_raw or not isinstance(parts_raw, list):
        raise DatasetError(yaml_path, "parts: a list of {data: <dataset yaml>, ...} is required for format merge")
    parts, attributes = [], {}
    for i, p in enumerate(parts_raw):
        where = f"parts[{i}]"
        if not isinstance(p, dict) or "data" not in p or set(p) - _PART_KEYS:
            raise DatasetError(yaml_path, f"{where}: keys {sorted(_PART_KEYS)} ('data' required), got {p!r}")
        for key in ("classes", "typed_by", "max_fields"):
            if not isinstance(p.get(key) or {}, dict):
                raise DatasetError(yaml_path, f"{where}: {key} must be a mapping, got {p[key]!r}")
        spec = load_spec(yaml_path.parent / str(p["data"]), need=())  # the merge takes whichever splits a part has
        classes = {c: c for c in spec.names} if p.get("classes") is None else {str(k): (None if v is None else str(v)) for k, v in p["classes"].items()}
        for k, v in classes.items():
            if k not in spec.names or (v is not None and v not in targets):
                raise DatasetError(yaml_path, f"{where} ({p['data']}): class map {k} -> {v}: {k!r} must be a class of the part "
                                              f"and {v!r} a merged class or label set")
        missing = [c for c in spec.names if c not in classes]
        if missing:
            raise DatasetError(yaml_path, f"{where} ({p['data']}): classes {missing} are not mapped (map them to null to drop them)")
        typed_by = None
        if p.get("typed_by"):
            attr, values = p["typed_by"].get("attribute"), p["typed_by"].get("classes") or {}
            declared = {a.name: a for a in spec.attributes}
            if attr not in declared or not isinstance(values, dict) or any(
                    v not in declared[attr].values or t not in targets for v, t in values.items()):
                raise DatasetError(yaml_path, f"{where}: typed_by names attribute {attr!r} and its values -> merged classes or label sets")
            typed_by = (attr, {str(k): str(v) for k, v in values.items()})
        for a in spec.attributes:
            decl = {"name": a.name, "values": list(a.values), "unknown": [""], "use": a.use}
            if a.name in attributes and attributes[a.name]["values"] != decl["values"]:
                raise DatasetError(yaml_path, f"{where}: attribute {a.name!r} has other values than in an earlier part")
            attributes.setdefault(a.name, decl)
        max_fields = {str(k): v for k, v in (p.get("max_fields") or {}).items()}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in max_fields.values()):
            raise DatasetError(yaml_path, f"{where}: max_fields: split -> a number of fields, got {p['max_fields']!r}")
        parts.append(Part(spec, classes, typed_by, max_fields,
                          tuple(str(o) for o in p.get("exclude_origins") or ())))
    names.extend(label_sets)
    return parts, label_sets, list(attributes.values())


def _subset(fields: list[Field], n: int) -> list[Field]:
    """A fixed ``n`` of ``fields``: the same on every run and machine (ranked by a hash of the file name)."""
    return sorted(fields, key=lambda f: hashlib.sha1(f.name.encode()).hexdigest())[:n] if n < len(fields) else fields


def read(spec: DatasetSpec) -> Dataset:
    from wbc.formats import read_dataset

    problems = ProblemLog()
    splits: dict[str, list[Field]] = {}
    taken = defaultdict(set)  # file names per split so far
    for part in spec.parts:
        data = read_dataset(part.spec)
        problems.problems += [replace(p, reason=f"{part.spec.name}: {p.reason}") for p in data.problems.problems]
        index = {a.name: i for i, a in enumerate(part.spec.attributes)}
        for split, fields in data.splits.items():
            if split not in spec.splits:
                continue
            if part.exclude_origins:
                left_out = [f for f in fields if part.spec.origin_of(f.width, f.height) in part.exclude_origins]
                if left_out:
                    problems.add(split, "noted", f"{part.spec.name}: {len(left_out)} fields of {', '.join(part.exclude_origins)} left out "
                                                 f"(exclude_origins)", part.spec.yaml_path)
                fields = [f for f in fields if part.spec.origin_of(f.width, f.height) not in part.exclude_origins]
            kept = _subset(fields, part.max_fields[split]) if split in part.max_fields else fields
            if len(kept) < len(fields):
                problems.add(split, "noted", f"{part.spec.name}: {len(fields) - len(kept)} of {len(fields)} fields left out (max_fields)",
                             part.spec.yaml_path)
            for f in kept:
                boxes = []
                for b in f.boxes:
                    target = _target(part, b, index)
                    if target is None:
                        problems.add(split, "skipped", f"{part.spec.name}: box of class {part.spec.names[b.cls]} (mapped to null)", f.image)
                        continue
                    cls = spec.names.index(target)
                    codes = tuple(b.attributes[index[a.name]] if a.name in index else a.absent_code(target) for a in spec.attributes)
                    boxes.append(Box(cls, b.xyxy, codes))
                field_class = part.spec.names[f.field_class] if f.field_class is not None else None
                target = part.classes.get(field_class)
                alias = f"{part.spec.name}__{f.name}" if f.name in taken[split] else None  # another part has a file of that name
                taken[split].add(alias or f.name)
                splits.setdefault(split, []).append(Field(f.image, f.width, f.height, boxes, None if target is None else spec.names.index(target),
                                                          part.spec.origin_of(f.width, f.height), alias))
    _drop_train_copies(splits, problems)
    dataset = Dataset(spec, splits, problems)
    if not splits.get("train"):
        raise DatasetError(spec.yaml_path, "the merged parts give no train fields")
    return dataset


COPY_CORRELATION = 0.97  # of 16 x 16 grey thumbnails: re-encoded copies score above 0.98, different fields far below


def thumbnail(image: Path) -> np.ndarray:
    """A field's 16 x 16 grey thumbnail, normalised to zero mean and unit norm (for finding copies)."""
    grey = cv2.imread(str(image), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    t = cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-6)


def _drop_train_copies(splits: dict[str, list[Field]], problems: ProblemLog) -> None:
    held = [f for split, fields in splits.items() if split != "train" for f in fields]
    if not held or not splits.get("train"):
        return
    train = splits["train"]
    similarity = np.stack([thumbnail(f.image) for f in train]) @ np.stack([thumbnail(f.image) for f in held]).T
    best, which = similarity.max(1), similarity.argmax(1)
    for f, b, j in zip(train, best, which):
        if b > COPY_CORRELATION:
            problems.add("train", "skipped", f"copy of a held-out field ({held[j].origin})", f.image, detail=str(held[j].image))
    splits["train"] = [f for f, b in zip(train, best) if b <= COPY_CORRELATION]


def _target(part: Part, box: Box, index: dict[str, int]) -> str | None:
    """The merged class or label set of a part's box."""
    target = part.classes[part.spec.names[box.cls]]
    if target is not None and part.typed_by:
        attr, classes = part.typed_by
        code = box.attributes[index[attr]]
        if code >= 0:
            target = classes.get(part.spec.attributes[index[attr]].values[code], target)
    return target
