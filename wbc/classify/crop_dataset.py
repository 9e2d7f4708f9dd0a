"""Cut cells out of fields into a folder-per-class classification dataset.

    <out>/<split>/<class>/<image stem>_<box>.jpg
    <out>/manifest.csv   one row per crop: split, class, file, source image, box index, box, confidence,
                         source class (before renaming), then every attribute's value where known
    <out>/crops.json     the options used and the counts per split and class, with what was skipped and why

Boxes come from a dataset's ground truth (its own splits) or from a detector's predictions on a
folder of images (splits assigned per source image from a hash of its name, so all crops of one
image land in one split, the same one on every run). Writing is deterministic: the same inputs and
options give byte-identical output, and re-running replaces an earlier output of this command.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import pandas as pd

from wbc.canonical import CanonicalDataset
from wbc.classify.crops import crop_box
from wbc.errors import DatasetError, UsageError
from wbc.evaluation.cells import NOT_APPLICABLE_LABEL, UNKNOWN_LABEL, read_field, value_label
from wbc.sources import load_image

MANIFEST = "manifest.csv"
JPEG_QUALITY = 95


@dataclass(frozen=True)
class CropOptions:
    margin: float = 0.1  # fraction of the box's longer side added on every side
    square: bool = True
    size: int | None = None  # output side in pixels; None: the crop's own size
    min_size: float = 0.0  # boxes whose shorter side is below this (pixels) are skipped
    classes: tuple[str, ...] | None = None  # source classes kept (None: all)
    rename: dict[str, str] = field(default_factory=dict)  # source class -> output class; "*": every other kept class
    conf: float = 0.25  # predictions below this confidence are skipped
    class_attribute: str | None = None  # name the class folder by this attribute's value instead (e.g. BCCD's wbc_subtype)


@dataclass(frozen=True)
class BoxRecord:
    split: str
    image: Path
    box: int  # index of the box in its field (label row, or prediction rank)
    xyxy: tuple[float, float, float, float]
    cls: str
    confidence: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()


def parse_rename(items: Iterable[str]) -> dict[str, str]:
    """['BNE=NE', 'SNE=NE', '*=other'] -> {'BNE': 'NE', 'SNE': 'NE', '*': 'other'}."""
    rename = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--rename takes OLD=NEW (or *=NEW for every other class), got '{item}'")
        rename[old] = new
    return rename


def output_class(cls: str, options: CropOptions) -> str:
    return options.rename.get(cls, options.rename.get("*", cls))


def split_of(name: str, fractions: dict[str, float]) -> str:
    """Deterministic split of a source image from a hash of its name; ``fractions``: e.g. {'val': 0.2};
    the rest is 'train'."""
    u = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for split, fraction in fractions.items():
        edge += fraction
        if u < edge:
            return split
    return "train"


def ground_truth_boxes(canonical: CanonicalDataset, splits: list[str]) -> Iterator[BoxRecord]:
    """Every ground-truth box of ``splits``, with its attribute values (known or not)."""
    table = canonical.attributes()
    specs = [{"name": a.name, "values": list(a.values)} for a in canonical.spec.used_attributes]
    for split in splits:
        if split not in canonical.splits:
            raise DatasetError(canonical.spec.yaml_path, f"no split '{split}' (present: {', '.join(canonical.splits)})")
        rows = table[table["split"] == split]
        if rows.empty:
            raise DatasetError(canonical.spec.yaml_path, f"split '{split}' has no boxes")
        for r in rows.to_dict("records"):
            yield BoxRecord(split, canonical.root / "images" / split / r["image"], int(r["box"]),
                            (r["x1"], r["y1"], r["x2"], r["y2"]), r["class"],
                            attributes=tuple((s["name"], value_label(s, int(r[s["name"]]))) for s in specs))


def predicted_boxes(analyzer, images: list[Path], fractions: dict[str, float], batch: int = 16,
                    unreadable: dict[str, str] | None = None) -> Iterator[BoxRecord]:
    """The analyzer's cells on ``images``, with the attributes its head predicts. Files that cannot be
    read are left out and recorded in ``unreadable`` ({path: reason})."""
    for start in range(0, len(images), batch):
        loaded = [load_image(p) for p in images[start:start + batch]]
        if unreadable is not None:
            unreadable.update({str(x.path): x.note for x in loaded if x.image is None})
        loaded = [x for x in loaded if x.image is not None]
        chunk = [x.path for x in loaded]
        for path, cells in zip(chunk, analyzer([x.image for x in loaded]) if loaded else []):
            split = split_of(path.name, fractions)
            for i, c in enumerate(cells):
                yield BoxRecord(split, path, i, c.box, c.class_name, c.confidence, tuple((n, v) for n, (v, _) in c.attributes.items()))


def prepare_output(out: Path) -> None:
    """An empty ``out``; an earlier output of this command (it has a manifest) is replaced, anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise UsageError(f"{out} exists and is not a crop dataset (no {MANIFEST}): choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def write_crops(records: Iterable[BoxRecord], out: Path, options: CropOptions, progress=None) -> dict:
    """Write the crops of ``records`` under ``out``. Returns counts per split and class and the skipped boxes by reason."""
    prepare_output(out)
    rows, skipped, image, image_path = [], Counter(), None, None
    records = progress(records) if progress else records
    for r in records:
        if options.classes is not None and r.cls not in options.classes:
            skipped["class not selected"] += 1
            continue
        if r.confidence is not None and r.confidence < options.conf:
            skipped[f"confidence below {options.conf}"] += 1
            continue
        x1, y1, x2, y2 = r.xyxy
        if min(x2 - x1, y2 - y1) < max(options.min_size, 1e-6):
            skipped[f"box smaller than {options.min_size} px"] += 1
            continue
        cls = r.cls
        if options.class_attribute:
            cls = dict(r.attributes).get(options.class_attribute, UNKNOWN_LABEL)
            if cls in (UNKNOWN_LABEL, NOT_APPLICABLE_LABEL):
                skipped[f"{options.class_attribute} unknown or not applicable"] += 1
                continue
        cls = output_class(cls, options)
        if r.image != image_path:
            image, image_path = read_field(r.image), r.image
        file = Path(r.split) / cls / f"{r.image.stem}_{r.box}.jpg"
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        crop = crop_box(image, r.xyxy, options.margin, options.square, options.size)
        if not cv2.imwrite(str(out / file), crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"could not write {out / file}")
        rows.append({"split": r.split, "class": cls, "file": file.as_posix(), "source": str(r.image), "box": r.box,
                     "x1": round(x1, 2), "y1": round(y1, 2), "x2": round(x2, 2), "y2": round(y2, 2),
                     "confidence": "" if r.confidence is None else round(r.confidence, 4), "source_class": r.cls, **dict(r.attributes)})
    if not rows:
        raise UsageError(f"no crops written ({dict(skipped) or 'no boxes'}): check --classes, --conf and --min-size")
    manifest = pd.DataFrame(rows).sort_values(["split", "class", "file"], kind="stable")
    manifest.to_csv(out / MANIFEST, index=False)
    counts = {s: dict(sorted(Counter(g["class"]).items())) for s, g in manifest.groupby("split", sort=True)}
    summary = {"options": {**asdict(options), "classes": list(options.classes) if options.classes else None},
               "crops": len(manifest), "counts": counts, "skipped": dict(sorted(skipped.items()))}
    (out / "crops.json").write_text(json.dumps(summary, indent=2))
    return summary


def counts_table(summary: dict) -> str:
    """Crops per class (rows) and split (columns), as a markdown table."""
    splits = sorted(summary["counts"])
    classes = sorted({c for per in summary["counts"].values() for c in per})
    lines = ["| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    lines += [f"| {c} | " + " | ".join(str(summary["counts"][s].get(c, 0)) for s in splits) + " |" for c in classes]
    lines.append("| **all** | " + " | ".join(str(sum(summary["counts"][s].values())) for s in splits) + " |")
    return "\n".join(lines)


def main(argv=None):
    import argparse

    from ultralytics.utils import TQDM

    from wbc.arguments import FRACTION, IMGSZ, Range
    from wbc.paths import new_run_dir, runs_root

    share = Range(float, 0, 1, hi_open=True)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="dataset yaml: crop its ground-truth boxes")
    src.add_argument("--source", help="images to detect on (image, folder, glob or list file): crop the predicted boxes")
    p.add_argument("--splits", nargs="+", default=["train", "val"], help="with --data: the splits to crop")
    p.add_argument("--data-root", help="with --data: dataset root overriding the yaml's path")
    p.add_argument("--weights", help="with --source: detector (default: the shipped model)")
    p.add_argument("--imgsz", type=IMGSZ, help="with --source: detector input size (default: its training size)")
    p.add_argument("--val-fraction", type=share, default=0.2, help="with --source: share of source images assigned to val")
    p.add_argument("--test-fraction", type=share, default=0.0, help="with --source: share of source images assigned to test")
    p.add_argument("--conf", type=FRACTION, default=0.25, help="with --source: minimum confidence")
    p.add_argument("--classes", nargs="+", help="source classes to keep (default: the dataset's WBC classes with --data, all with --source)")
    p.add_argument("--all-classes", action="store_true", help="with --data: keep every class (RBC, platelets too)")
    p.add_argument("--rename", nargs="+", default=[], help="OLD=NEW class renames; *=NEW renames every other kept class")
    p.add_argument("--class-attribute", help="name each crop's class folder by this attribute's value (e.g. wbc_subtype); "
                   "boxes where it is unknown are skipped and counted")
    p.add_argument("--margin", type=Range(float, 0, 2), default=0.1, help="fraction of the box's longer side added on each side")
    p.add_argument("--no-square", action="store_true", help="keep the box's aspect ratio instead of squaring it")
    p.add_argument("--size", type=Range(int, 8), help="output side in pixels (default: the crop's own size)")
    p.add_argument("--min-size", type=Range(float, 0), default=0.0, help="skip boxes whose shorter side is below this many pixels")
    p.add_argument("--out", type=Path, help="output folder (default: runs/crops/<name>, never overwriting another run)")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    if args.source and args.val_fraction + args.test_fraction >= 1:
        p.error(f"--val-fraction {args.val_fraction} + --test-fraction {args.test_fraction} leave nothing for train; keep their sum under 1")

    unreadable: dict[str, str] = {}
    if args.data:
        from wbc.canonical import prepare

        canonical = prepare(args.data, args.data_root)
        classes = args.classes or (None if args.all_classes else canonical.spec.wbc_classes)
        records = ground_truth_boxes(canonical, args.splits)
    else:
        from wbc.inference import WBCAnalyzer
        from wbc.paths import DEFAULT_WEIGHTS
        from wbc.sources import image_sources

        analyzer = WBCAnalyzer(args.weights or DEFAULT_WEIGHTS, imgsz=args.imgsz, conf=min(args.conf, 0.25))
        classes = args.classes
        fractions = {"val": args.val_fraction, "test": args.test_fraction}
        records = predicted_boxes(analyzer, image_sources(args.source), {k: v for k, v in fractions.items() if v > 0}, unreadable=unreadable)
    options = CropOptions(args.margin, not args.no_square, args.size, args.min_size, tuple(classes) if classes else None,
                          parse_rename(args.rename), args.conf, args.class_attribute)
    out = args.out or new_run_dir(args.name, runs_root() / "crops")
    summary = write_crops(records, out, options, progress=lambda it: TQDM(it, desc="crops", unit=" boxes"))
    print(counts_table(summary))
    if summary["skipped"]:
        print("skipped: " + ", ".join(f"{n} ({reason})" for reason, n in summary["skipped"].items()))
    for path, reason in unreadable.items():
        print(f"skipped file {path}: {reason}")
    print(f"{summary['crops']} crops written to {out}" + (f"; {len(unreadable)} files could not be read" if unreadable else ""))
