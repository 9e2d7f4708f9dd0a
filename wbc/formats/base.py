"""What every importer shares: listing a split's images, verifying them, and turning raw boxes
into canonical boxes with every repair and skip counted."""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import shutil
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from wbc.errors import DatasetError, ProblemLog
from wbc.schema import UNKNOWN_ORIGIN, Box, Dataset, DatasetSpec, Field

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
CLIP_TOLERANCE_PX = 0.5  # overshoot below this is rounding in the source, not an annotation error
SPLIT_ABSENT = "split source absent (split left out)"  # the reason noted for a declared split whose folder, list or file is not there

# PIL refuses images over 2 x MAX_IMAGE_PIXELS (about 179 megapixels) as possible decompression bombs; a lab's
# stitched smear may be larger: WBC_MAX_IMAGE_PIXELS raises the limit.
if os.environ.get("WBC_MAX_IMAGE_PIXELS"):
    Image.MAX_IMAGE_PIXELS = int(os.environ["WBC_MAX_IMAGE_PIXELS"]) // 2


def read_text(path: Path) -> str:
    """The content of a text file in UTF-8 (a leading byte-order mark dropped). Every importer reads its
    label files, lists, tables and yamls through this, so that a binary file or text in another
    encoding stops with the file, line and byte named instead of a UnicodeDecodeError."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:  # missing, a folder where a file should be, no permission
        raise DatasetError(path, f"cannot read: {e.strerror}") from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = start + e.start
        raise DatasetError(path, f"not UTF-8 text (byte 0x{data[at]:02x} at offset {at}): a binary file, or text in another encoding; "
                                 f"save it as UTF-8", data[:at].count(b"\n") + 1) from None


def read_table(path: Path, columns: list[str]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV file with a header row, as (line, {column: cell}) for ``columns`` (all required;
    other columns are ignored). Cells are the text as written; blank lines are skipped. Fatal: no
    header, a required column missing or named twice, a row with more or fewer cells than the header."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    header, header_line, rows, line = None, None, [], 1
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1  # the row's first line; the next row's
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if header is None:
                header, header_line = cells, start
                missing = [c for c in columns if c not in header]
                if missing:
                    raise DatasetError(path, f"missing column(s) {missing}; found {header}", start)
                twice = [c for c in columns if header.count(c) > 1]
                if twice:
                    raise DatasetError(path, f"column(s) {twice} named more than once in the header", start)
                index = {c: header.index(c) for c in columns}
                continue
            if len(cells) != len(header):
                raise DatasetError(path, f"{len(cells)} cells, the header (line {header_line}) has {len(header)}; "
                                         f"quote cells that hold a comma", start)
            rows.append((start, {c: cells[i] for c, i in index.items()}))
    except csv.Error as e:
        raise DatasetError(path, f"malformed CSV: {e}", reader.line_num) from None
    if header is None:
        raise DatasetError(path, f"empty file; expected a header row naming the columns {columns}")
    return rows


def split_images(spec: DatasetSpec, split: str, image_dir_key: str | None = None) -> list[Path] | None:
    """Image paths of a split, sorted; None when the split's source does not exist.

    The split's yaml value is a folder of images, or a text file listing image paths or bare ids
    (VOC ``ImageSets``); bare ids are looked up in ``source[image_dir_key]`` with any image suffix.
    """
    location = spec.root / spec.splits[split]
    if location.is_dir():
        return sorted(p for p in location.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not location.is_file():
        return None
    image_dir = spec.source_path(image_dir_key, split) if image_dir_key else location.parent
    paths = []
    for lineno, line in enumerate(read_text(location).splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        candidate = Path(entry) if Path(entry).is_absolute() else location.parent / entry
        if candidate.suffix.lower() in IMAGE_SUFFIXES:
            paths.append(candidate)
            continue
        matches = [image_dir / f"{entry}{s}" for s in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")]
        found = next((m for m in matches if m.exists()), None)
        paths.append(found or image_dir / f"{entry}.jpg")  # a missing file is reported by the caller
    return paths


def image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) of a fully decodable image, or the reason it cannot be used."""
    if not path.exists():
        return "missing"
    st = path.stat()
    if st.st_size == 0:
        return "empty file"
    return _decoded_size(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=200_000)
def _decoded_size(path: str, size: int, mtime_ns: int) -> tuple[int, int] | str:
    """Decode once per file state (size and mtime are part of the key): exports and re-imports in
    one process link the same files and need not decode them again."""
    try:
        with Image.open(path) as im:
            im.load()  # decodes the whole image: truncated files fail here, not in training
            return im.size
    except Image.DecompressionBombError as e:
        return (f"too large to decode safely ({e}); set WBC_MAX_IMAGE_PIXELS to a larger pixel count to allow it "
                "(predict.py tiles large fields), or cut it into fields")
    except (UnidentifiedImageError, ModuleNotFoundError):  # no decoder claims it (an optional plugin may be missing)
        return "not an image (no image decoder recognises it)"
    except Exception as e:  # noqa: BLE001 -- whatever a decoder raises, the file is not a usable image
        return f"corrupt image ({type(e).__name__}: {e})"


def open_field(image: Path, split: str, problems: ProblemLog, missing_reason: str = "listed image missing") -> Field | None:
    """An empty Field for a decodable image, or None with the reason logged (missing, empty, corrupt)."""
    size = image_size(image)
    if size == "missing":
        problems.add(split, "skipped", missing_reason, image)
        return None
    if isinstance(size, str):
        problems.add(split, "skipped", "corrupt image", image, detail=size)
        return None
    return Field(image, *size)


def encode_attributes(spec: DatasetSpec, given: dict, class_name: str, path, where: str, line: int | None = None) -> tuple[int, ...]:
    """Attribute codes of one box from {attribute name: raw token}; a missing name gets the absent code."""
    codes = []
    for attr in spec.attributes:
        if attr.name not in given:
            codes.append(attr.absent_code(class_name))
            continue
        code = attr.encode(given[attr.name])
        if code is None:
            raise DatasetError(path, f"{where}attribute {attr.name!r} value {given[attr.name]!r} is not in the declared set {list(attr.values)}", line)
        codes.append(code)
    return tuple(codes)


class BoxSanitizer:
    """Clips boxes to their image, drops zero-size and exact-duplicate boxes, and logs each case."""

    def __init__(self, problems: ProblemLog, split: str):
        self.problems, self.split = problems, split

    def __call__(self, boxes: list[tuple[Box, int | None]], width: int, height: int, path) -> list[Box]:
        """``boxes``: (box, source line) pairs in pixels -> the boxes to keep."""
        kept, seen = [], set()
        for box, line in boxes:
            x1, y1, x2, y2 = box.xyxy
            if not all(math.isfinite(v) for v in box.xyxy):
                raise DatasetError(path, f"box coordinates are not finite: {box.xyxy}", line)
            if x2 - x1 <= 0 or y2 - y1 <= 0:
                self.problems.add(self.split, "skipped", "zero-size box", path, line, f"xyxy={_fmt(box.xyxy)}")
                continue
            cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
            if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
                self.problems.add(self.split, "skipped", "box outside the image", path, line, f"xyxy={_fmt(box.xyxy)} image={width}x{height}")
                continue
            overshoot = max(cx1 - x1, cy1 - y1, x2 - cx2, y2 - cy2)
            if overshoot > 0:
                if overshoot > CLIP_TOLERANCE_PX:
                    self.problems.add(self.split, "repaired", "box outside the image (clipped)", path, line, f"xyxy={_fmt(box.xyxy)} image={width}x{height}")
                box = Box(box.cls, (cx1, cy1, cx2, cy2), box.attributes, box.extra)
            if cx2 - cx1 < 1 or cy2 - cy1 < 1:
                self.problems.add(self.split, "skipped", "zero-size box", path, line, f"under 1 px after clipping: xyxy={_fmt(box.xyxy)}")
                continue
            key = (box.cls, tuple(round(v, 3) for v in box.xyxy))
            if key in seen:
                self.problems.add(self.split, "skipped", "duplicate row", path, line, f"class {box.cls} xyxy={_fmt(box.xyxy)}")
                continue
            seen.add(key)
            kept.append(box)
        return kept


def _fmt(xyxy) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in xyxy) + ")"


def parse_number(token: str, path, line: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise DatasetError(path, f"{what} is not a number: {token!r}", line) from None
    if not math.isfinite(value):
        raise DatasetError(path, f"{what} is not finite: {token!r}", line)
    return value


def parse_class_id(token: str, nc: int, path, line: int) -> int:
    value = parse_number(token, path, line, "class id")
    if value != int(value):
        raise DatasetError(path, f"class id is not an integer: {token!r}", line)
    if not 0 <= value < nc:
        raise DatasetError(path, f"class id {int(value)} out of range: the dataset yaml declares {nc} classes (0..{nc - 1})", line)
    return int(value)


def numeric_token(token: str) -> str:
    """'1', '1.0' and '1.000' are the same attribute value in numeric label files."""
    try:
        value = float(token)
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else token


def require_nonempty(dataset: Dataset) -> None:
    for split, fields in dataset.splits.items():
        if not fields:
            raise DatasetError(dataset.spec.yaml_path, f"split {split!r} has no usable images ({dataset.spec.root / dataset.spec.splits[split]})")


def link_image(source: Path, target: Path, copy: bool = False) -> None:
    """Place ``source`` at ``target`` as a symlink (or a copy where links are not possible)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.resolve() == source.resolve():
        return
    if target.is_symlink() or target.exists():
        target.unlink()
    if not copy:
        try:
            os.symlink(source.resolve(), target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


def unique_image_names(fields, path) -> None:
    names = {}
    for f in fields:
        if f.name in names and names[f.name] != f.image:
            raise DatasetError(path, f"two images share the file name {f.name!r}: {names[f.name]} and {f.image}")
        names[f.name] = f.image


def write_dataset_yaml(spec: DatasetSpec, out: Path, fmt: str, splits: dict[str, str], source: dict) -> Path:
    """Write a dataset yaml for an exported copy of ``spec``'s data in format ``fmt`` under ``out``."""
    import yaml

    doc = {"name": spec.name, "path": str(out.resolve()), "format": fmt, **splits, "names": list(spec.names)}
    if spec.wbc_classes != spec.names:
        doc["wbc_classes"] = list(spec.wbc_classes)
    if spec.nrbc_classes:
        doc["nrbc_classes"] = list(spec.nrbc_classes)
    if spec.origins != UNKNOWN_ORIGIN:
        doc["origins"] = spec.origins if isinstance(spec.origins, str) else {
            name: [f"{w}x{h}" for (w, h), n in spec.origins.items() if n == name] for name in dict.fromkeys(spec.origins.values())}
    if spec.training_scale:
        doc["training_scale"] = dict(spec.training_scale)
    doc["source"] = source
    doc["attributes"] = [
        {k: v for k, v in {
            "name": a.name, "values": list(a.values), "unknown": list(a.unknown) or None,
            "not_applicable": list(a.not_applicable) or None,
            "applies_to": None if a.applies_to is None else list(a.applies_to),
            "use": None if a.use else False,
        }.items() if v is not None}
        for a in spec.attributes
    ]
    path = out / "dataset.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path
