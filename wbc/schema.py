"""The one dataset schema: a dataset yaml (spec) and the canonical in-memory form of its data.

A dataset yaml extends the ultralytics data yaml::

    path: pbc                    # dataset root; relative paths are taken under the data root
    format: yolo_csv             # attridet | lld | coco | voc | yolo_csv (see wbc/formats)
    train: images/train          # per split: image folder, or a text file of image ids / paths; training needs
    val: images/val              # train and val, a dataset only evaluated (test.py, check.py) may declare test alone
    test: images/test            # optional; a split whose source is absent is reported and left out
    names: [BA, BNE, ...]        # class names, list or {id: name}
    wbc_classes: [BA, ...]       # optional: the classes that are WBC types (default: all)
    nrbc_classes: [ERB]          # optional: those of them that are nucleated red cells: found and typed like
                                 # WBC, but reported per 100 WBC outside the differential's 100
    source: {...}                # format-specific locations; "{split}" is replaced by the split name
    training_scale:              # optional: train at a model's scale (a fine-tuning set exported by the review app):
      rbc_diameter_px: 72.5      # every origin's fields are resized so that their red cells are this large, and
      field_size: 363            # letterboxed with the gain of fields this large (the base model's card records both)
    origins:                     # optional: where each field comes from (scanner, lab), told by its image size,
      Raabin-WBC: [575x575]      # so that every metric can be split by origin; or one name for every field
      PBC: [360x363, 366x369]    # (``origins: PBC``). A field of another size is of origin "unknown".
    attributes:
      - name: cell_size
        values: [big, small]     # ordered value set, as the raw annotation spells it
        unknown: ['']            # raw tokens meaning "unknown" (masked out)
        not_applicable: []       # raw tokens meaning "not applicable" (masked out)
        applies_to: [BA, ...]    # optional: classes that carry this attribute; others are not applicable
        use: true                # false: kept for lossless round trips, never trained or scored

Boxes carry one integer code per attribute: the index of the value in ``values`` (>= 0),
``UNKNOWN`` (-1) or ``NOT_APPLICABLE`` (-2). ``code >= 0`` is the mask of known values.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from wbc.errors import DatasetError, ProblemLog
from wbc.paths import data_root

UNKNOWN = -1
NOT_APPLICABLE = -2
SPLITS = ("train", "val", "test")
FORMATS = ("attridet", "lld", "coco", "voc", "yolo", "yolo_csv", "merge")
UNKNOWN_ORIGIN = "unknown"
_SPEC_KEYS = {"name", "path", "format", "names", "nc", "wbc_classes", "nrbc_classes", "source", "attributes", "download", "origins",
              "parts", "label_sets", "training_scale", *SPLITS}
_ATTRIBUTE_KEYS = {"name", "values", "unknown", "not_applicable", "applies_to", "use", "description"}


def _tokens(values, path, what) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, (list, tuple)):
        raise DatasetError(path, f"{what} must be a list, got {values!r}")
    return tuple("" if v is None else str(v) for v in values)


@dataclass(frozen=True)
class Attribute:
    """One morphological attribute and its ordered value set."""

    name: str
    values: tuple[str, ...]
    unknown: tuple[str, ...] = ()
    not_applicable: tuple[str, ...] = ()
    applies_to: tuple[str, ...] | None = None  # class names; None: every class
    use: bool = True

    def encode(self, token) -> int | None:
        """Raw annotation token -> code; None when the token is outside the declared set."""
        token = "" if token is None else str(token).strip()
        if token in self.values:
            return self.values.index(token)
        if token in self.unknown:
            return UNKNOWN
        if token in self.not_applicable:
            return NOT_APPLICABLE
        return None

    def decode(self, code: int) -> str:
        """Code -> raw token (the first declared unknown / not-applicable token for masked codes)."""
        if code >= 0:
            return self.values[code]
        tokens = self.unknown if code == UNKNOWN else self.not_applicable
        if not tokens:
            raise ValueError(f"attribute {self.name!r} declares no token for code {code}")
        return tokens[0]

    def absent_code(self, class_name: str) -> int:
        """Code for a box that has no annotation of this attribute."""
        if self.applies_to is not None and class_name not in self.applies_to:
            return NOT_APPLICABLE
        return UNKNOWN


@dataclass
class DatasetSpec:
    """A parsed dataset yaml. ``root`` is absolute; ``splits`` maps split name -> its yaml value."""

    name: str
    yaml_path: Path
    root: Path
    format: str
    names: list[str]
    splits: dict[str, str]
    attributes: list[Attribute]
    source: dict
    wbc_classes: list[str]
    nrbc_classes: list[str] = field(default_factory=list)
    origins: str | dict[tuple[int, int], str] = UNKNOWN_ORIGIN  # see the module doc
    parts: list = field(default_factory=list)  # format merge: its parts (wbc.formats.merge.Part)
    label_sets: dict[str, list[str]] = field(default_factory=dict)  # format merge: name -> classes, "one of these"
    training_scale: dict | None = None  # {rbc_diameter_px, field_size}: train at this scale, not the data's own (see the module doc)
    raw: dict = field(repr=False, default_factory=dict)
    root_from: str = ""  # how ``root`` was found, for the message when it does not exist

    def origin_of(self, width: int, height: int) -> str:
        """Where a field of this size comes from (``origins``), or "unknown"."""
        if isinstance(self.origins, str):
            return self.origins
        return self.origins.get((width, height), UNKNOWN_ORIGIN)

    def source_path(self, key: str, split: str, default: str | None = None) -> Path | None:
        """The dataset-relative location ``source[key]`` with ``{split}`` filled in, made absolute."""
        template = self.source.get(key, default)
        if template is None:
            return None
        try:
            return self.root / str(template).format(split=split)
        except (KeyError, IndexError, ValueError):
            raise DatasetError(self.yaml_path, f"source.{key}: {template!r}: '{{split}}' is the only placeholder; "
                                               f"write a literal brace as '{{{{' or '}}}}'") from None

    def class_id(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None

    @property
    def used_attributes(self) -> list[Attribute]:
        return [a for a in self.attributes if a.use]


def _expand(value: str) -> str:
    """Expand ${VAR} and ${VAR:-default} so that yamls can name machine-specific roots."""

    def repl(match):
        var, default = match.group(1), match.group(3)
        return os.environ.get(var, default if default is not None else match.group(0))

    return os.path.expanduser(re.sub(r"\$\{(\w+)(:-([^}]*))?\}", repl, value))


def load_spec(yaml_path: str | Path, root: str | Path | None = None, need: tuple[str, ...] = ("train", "val")) -> DatasetSpec:
    """Read and validate a dataset yaml.

    Args:
        yaml_path: the dataset yaml.
        root: overrides the yaml's ``path`` (the dataset root); otherwise a relative ``path``
            is taken under ``wbc.paths.data_root()`` (env ``WBC_DATA_ROOT``).
        need: the splits the caller reads, which the yaml must declare (training needs train and
            val; evaluating a test-only dataset needs none but the one it scores). At least one
            split must be declared either way.
    """
    from wbc.formats.base import read_text  # the importers' reader (wbc.formats imports this module)

    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        raise DatasetError(yaml_path, "dataset yaml not found")
    try:
        raw = yaml.safe_load(read_text(yaml_path)) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise DatasetError(yaml_path, f"invalid yaml: {getattr(e, 'problem', e)}", None if line is None else line + 1)
    if not isinstance(raw, dict):
        raise DatasetError(yaml_path, "a dataset yaml must be a mapping")
    unknown_keys = sorted(set(raw) - _SPEC_KEYS)
    if unknown_keys:
        raise DatasetError(yaml_path, f"unknown key(s) {unknown_keys}; allowed: {sorted(_SPEC_KEYS)}")
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise DatasetError(yaml_path, f"format must be one of {list(FORMATS)}, got {fmt!r}")

    names = raw.get("names")
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):
            raise DatasetError(yaml_path, "names: ids must be 0..n-1 without gaps")
        names = [names[i] for i in range(len(names))]
    if not names or not isinstance(names, list):
        raise DatasetError(yaml_path, "names: a non-empty list of class names is required")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise DatasetError(yaml_path, f"names: duplicate class names {sorted({n for n in names if names.count(n) > 1})}")
    if "nc" in raw and raw["nc"] != len(names):
        raise DatasetError(yaml_path, f"nc: {raw['nc']} does not match the {len(names)} names")

    if fmt == "merge":  # a merge of other dataset yamls: its root is its own folder, its splits theirs
        raw = {"train": "train", "val": "val", "test": "test", "path": str(yaml_path.resolve().parent), **raw}
    if root is not None:
        dataset_root, root_from = Path(root).expanduser(), "--data-root"
    else:
        if raw.get("path") is None:
            raise DatasetError(yaml_path, "path: the dataset root is required")
        dataset_root = Path(_expand(str(raw["path"])))
        root_from = f"path: {raw['path']}"
        if not dataset_root.is_absolute():
            root_from += f" under the data root {data_root()}; set WBC_DATA_ROOT or --data-root"
            dataset_root = data_root() / dataset_root
        else:
            root_from += "; or pass --data-root"
    splits = {}
    for s in SPLITS:
        if raw.get(s) is None:
            continue
        if not isinstance(raw[s], (str, int, float)) or isinstance(raw[s], bool):
            raise DatasetError(yaml_path, f"{s}: one image folder or image list file expected, got {raw[s]!r}")
        splits[s] = str(raw[s])
    for required in need:
        if required not in splits:
            raise DatasetError(yaml_path, f"{required}: split is required (declared: {', '.join(splits) or 'none'})")
    if not splits:
        raise DatasetError(yaml_path, f"no split declared: give at least one of {', '.join(SPLITS)}")

    parts, label_sets = [], {}
    if fmt == "merge":
        from wbc.formats.merge import parse_merge  # the merge format reads its parts' yamls

        parts, label_sets, merged_attributes = parse_merge(raw, yaml_path, names)
        raw = {**raw, "attributes": merged_attributes}
    if not isinstance(raw.get("attributes") or [], list):
        raise DatasetError(yaml_path, f"attributes: a list of {{name, values, ...}} expected, got {raw['attributes']!r}")
    attributes, seen = [], set()
    for i, a in enumerate(raw.get("attributes") or []):
        where = f"attributes[{i}]"
        if not isinstance(a, dict) or "name" not in a or "values" not in a:
            raise DatasetError(yaml_path, f"{where}: needs 'name' and 'values'")
        extra = sorted(set(a) - _ATTRIBUTE_KEYS)
        if extra:
            raise DatasetError(yaml_path, f"{where} ({a['name']}): unknown key(s) {extra}")
        if a["name"] in seen:
            raise DatasetError(yaml_path, f"{where}: duplicate attribute name {a['name']!r}")
        seen.add(a["name"])
        attr = Attribute(
            name=str(a["name"]),
            values=_tokens(a["values"], yaml_path, f"{where}.values"),
            unknown=_tokens(a.get("unknown"), yaml_path, f"{where}.unknown"),
            not_applicable=_tokens(a.get("not_applicable"), yaml_path, f"{where}.not_applicable"),
            applies_to=None if a.get("applies_to") is None else _tokens(a["applies_to"], yaml_path, f"{where}.applies_to"),
            use=bool(a.get("use", True)),
        )
        if len(attr.values) < 2:
            raise DatasetError(yaml_path, f"{where} ({attr.name}): needs at least two values")
        overlap = set(attr.values) & (set(attr.unknown) | set(attr.not_applicable))
        if overlap or len(set(attr.values)) != len(attr.values):
            raise DatasetError(yaml_path, f"{where} ({attr.name}): values must be distinct from each other and from unknown/not_applicable tokens")
        for cls in attr.applies_to or ():
            if cls not in names:
                raise DatasetError(yaml_path, f"{where} ({attr.name}): applies_to names unknown class {cls!r}")
        attributes.append(attr)

    wbc_classes = list(_tokens(raw.get("wbc_classes"), yaml_path, "wbc_classes")) or names
    for cls in wbc_classes:
        if cls not in names:
            raise DatasetError(yaml_path, f"wbc_classes: unknown class {cls!r}")
    nrbc_classes = list(_tokens(raw.get("nrbc_classes"), yaml_path, "nrbc_classes"))
    for cls in nrbc_classes:
        if cls not in wbc_classes:
            raise DatasetError(yaml_path, f"nrbc_classes: {cls!r} is not one of wbc_classes {wbc_classes}")
    source = raw.get("source") or {}
    if not isinstance(source, dict):
        raise DatasetError(yaml_path, "source: must be a mapping")
    return DatasetSpec(
        name=str(raw.get("name") or yaml_path.stem),
        yaml_path=yaml_path.resolve(),
        root=dataset_root.resolve(),
        format=fmt,
        names=names,
        splits=splits,
        attributes=attributes,
        source=source,
        wbc_classes=wbc_classes,
        nrbc_classes=nrbc_classes,
        origins=_origins(raw.get("origins"), yaml_path),
        parts=parts,
        label_sets=label_sets,
        training_scale=_training_scale(raw.get("training_scale"), yaml_path),
        raw=raw,
        root_from=root_from,
    )


def _training_scale(value, yaml_path: Path) -> dict | None:
    """``training_scale: {rbc_diameter_px: 72.5, field_size: 363}`` -> the same, checked; None if absent."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"rbc_diameter_px", "field_size"}:
        raise DatasetError(yaml_path, f"training_scale: needs exactly rbc_diameter_px and field_size, got {value!r}")
    try:
        scale = {"rbc_diameter_px": float(value["rbc_diameter_px"]), "field_size": int(value["field_size"])}
    except (TypeError, ValueError):
        raise DatasetError(yaml_path, f"training_scale: numbers expected, got {value!r}") from None
    if scale["rbc_diameter_px"] <= 0 or scale["field_size"] <= 0:
        raise DatasetError(yaml_path, f"training_scale: positive numbers expected, got {value!r}")
    return scale


def _origins(value, yaml_path: Path) -> str | dict[tuple[int, int], str]:
    """``origins:`` -> one name for every field, or {(width, height): name}."""
    if value is None or isinstance(value, str):
        return value or UNKNOWN_ORIGIN
    if not isinstance(value, dict):
        raise DatasetError(yaml_path, f"origins: a name, or a mapping of name -> image sizes like [575x575], got {value!r}")
    by_size = {}
    for name, sizes in value.items():
        for size in sizes if isinstance(sizes, list) else [sizes]:
            match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(size))
            if not match:
                raise DatasetError(yaml_path, f"origins: {name}: {size!r} is not an image size WIDTHxHEIGHT")
            key = (int(match.group(1)), int(match.group(2)))
            if key in by_size:
                raise DatasetError(yaml_path, f"origins: size {size} is given to both {by_size[key]} and {name}")
            by_size[key] = str(name)
    return by_size


@dataclass
class Box:
    """One annotated cell. ``xyxy`` in pixels; ``attributes`` one code per spec attribute;
    ``extra`` format-specific numbers kept for lossless round trips (e.g. LLD's point columns)."""

    cls: int
    xyxy: tuple[float, float, float, float]
    attributes: tuple[int, ...]
    extra: tuple[float, ...] = ()


@dataclass
class Field:
    """One smear image (a microscope field) and its boxes. ``field_class``: a class id that
    labels the whole field (PBC's expert label), or None."""

    image: Path
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    field_class: int | None = None
    origin: str | None = None  # set by a reader that knows it (a merged dataset); else the spec's ``origin_of`` tells
    alias: str | None = None  # the file name in the canonical form, where it must differ from the image's (a merged dataset)

    @property
    def name(self) -> str:
        return self.alias or self.image.name


@dataclass
class Dataset:
    """Canonical data: split name -> fields, plus every skipped or repaired item."""

    spec: DatasetSpec
    splits: dict[str, list[Field]]
    problems: ProblemLog = field(default_factory=ProblemLog)
    extra_columns: tuple[str, ...] = ()
