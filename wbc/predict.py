"""Whole-smear inference for a lab: every cell with its class, confidence, attributes and (where a
cell classifier is configured) its call; the differential count per smear and per run; annotated
images; a self-contained ``report.html`` gallery.

    python predict.py --source ../shared/data/leukemiaattri_samples --name samples

Writes ``runs/predict/<name>/``: ``cells.csv`` (one row per cell), ``cells.json`` (per image: size,
conversion note, cells), ``differential.json`` and ``differential.md`` (per smear and per run),
``annotated/<image>.jpg``, ``report.html``, ``skipped.csv`` (files that could not be used, and why).
Each field is first resized to the scale the model was trained on (``--pixel-size``, else estimated from
its red cells; reported per field in ``cells.json``); a resized field with a side above 1.5 x ``--tile``
pixels is then analysed in overlapping tiles (see :mod:`wbc.tiling`).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from wbc.differential import differential, differential_table, review_bin, review_reason
from wbc.errors import UsageError
from wbc.inference import Cell, FieldScale, WBCAnalyzer, model_card
from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir
from wbc.report_html import gallery_crops, write_report
from wbc.sources import image_sources, load_image
from wbc.rescale import SCALE_GROUP, resize, tile_needed
from wbc.tiling import analyze_tiled


def model_cell_types(weights: str | Path, names: list[str]) -> tuple[list[str], list[str]]:
    """(WBC types, nucleated red cell types) among a model's classes: from the model card's JSON
    (keys ``wbc_classes`` and ``nrbc_classes``), else (every class, none)."""
    listed = model_card(weights)
    wbc = [c for c in names if c in (listed.get("wbc_classes") or names)]
    return wbc, [c for c in wbc if c in (listed.get("nrbc_classes") or [])]


def default_tile(weights: str | Path, imgsz: int) -> int:
    """Tile side for large images: the size of the fields the model was trained on (model card key
    ``train_field_size``), so that a tile reaches the network at the training scale; else 1.5 × ``imgsz``."""
    return int(model_card(weights).get("train_field_size") or round(1.5 * imgsz))


def _scaled(analyzer: WBCAnalyzer, files):
    """(path, loaded image, its FieldScale) for each file, read ``SCALE_GROUP`` at a time so that
    the fields of a group share their scale estimate."""
    group = []
    for path in [*files, None]:
        if path is not None:
            group.append((path, load_image(path)))
        if group and (path is None or len(group) == SCALE_GROUP):
            readable = [loaded.image for _, loaded in group if loaded.image is not None]
            scales = iter(analyzer.field_scales(readable))
            yield from ((p, loaded, next(scales) if loaded.image is not None else None) for p, loaded in group)
            group = []


def to_field(cells: list[Cell], scale: FieldScale) -> list[Cell]:
    """Cells found on the resized field, in the original field's pixels."""
    for c in cells:
        c.box = tuple(v / scale.factor for v in c.box)
    return cells


def scale_note(notes: dict[str, dict], reference_px: float | None) -> str:
    """One line on how the run's fields were resized to the training scale, for the report."""
    if not reference_px:
        return "Fields were analysed at the size they came (the model records no training scale)."
    factors = sorted(n["scale_factor"] for n in notes.values())
    diameters = sorted(n["rbc_diameter_px"] for n in notes.values() if n["rbc_diameter_px"])
    found = f"median red-cell diameter {diameters[len(diameters) // 2]:.0f} px" if diameters else "no red-cell estimate"
    return (f"Fields were resized to the model's training scale (red cells {reference_px:.0f} px): {found}, resize factor "
            f"{factors[0]:.2f}–{factors[-1]:.2f} (per field in cells.json).")


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def annotate(image: np.ndarray, cells: list[Cell], wbc: set[str], review_conf: float) -> np.ndarray:
    from ultralytics.utils.plotting import Annotator, colors

    annotator = Annotator(image.copy(), line_width=max(1, round(max(image.shape[:2]) / 400)))
    for c in cells:
        unsure = bool(review_reason(c, wbc, review_conf))
        annotator.box_label(c.box, f"{c.class_name}{'?' if unsure else ''} {c.confidence:.2f}", (128, 128, 128) if unsure else colors(c.class_id, True))
    return annotator.result()


def cell_rows(image: str, cells: list[Cell], wbc: set[str], review_conf: float) -> list[dict]:
    rows = []
    for i, c in enumerate(cells):
        row = {"image": image, "cell": i, "class": c.class_name, "bin": review_bin(c, wbc, review_conf), "confidence": round(c.confidence, 4),
               **{k: round(v, 1) for k, v in zip(("x1", "y1", "x2", "y2"), c.box)}}
        if c.type_probability is not None:
            row["type_probability"], row["ood"] = round(c.type_probability, 4), round(c.ood, 3)
        row["review"] = review_reason(c, wbc, review_conf)
        for name, (value, p) in c.attributes.items():
            row[name], row[f"{name}_probability"] = value, round(p, 4)
        if c.call:
            row["call"], row["call_probability"] = c.call[0], round(c.call[1], 4)
        rows.append(row)
    return rows


def predict(source: str | Path, out: Path, weights: str | Path = DEFAULT_WEIGHTS, head: str | Path | bool | None = None,
            imgsz: int | None = None, conf: float = 0.25, iou: float = 0.7, review_conf: float = 0.5, tile: int | None = None,
            overlap: int | None = None, batch: int = 8, device: str = "cpu", cell_classifier: str | Path | None = None,
            wbc_classes: list[str] | None = None, annotated: bool = True, report: bool = True, log=print,
            nrbc_classes: list[str] | None = None, pixel_size: float | None = None, rescale: bool = True,
            review_rate: float | None = None, review: str | Path | bool | None = None) -> dict:
    """Analyse every image of ``source`` and write the outputs to ``out``. Returns the run summary.
    ``wbc_classes`` / ``nrbc_classes``: None reads them from the model card (:func:`model_cell_types`).
    ``pixel_size``: µm per pixel of every field (default: estimated per field from its red cells);
    ``rescale=False`` runs every field at the size it comes. ``review``: the review model (None: beside
    the weights, False: none, and ``review_conf`` decides); ``review_rate``: the share of val cells of
    known types its operating point flags (None: the stored one)."""
    from ultralytics.utils import TQDM

    from wbc.classify.cell_classifier import CellClassifier

    start = time.time()
    files = image_sources(source)
    analyzer = WBCAnalyzer(weights, head, imgsz, conf, iou, device,
                           cell_classifier=CellClassifier.from_yaml(cell_classifier, device) if cell_classifier else None,
                           rescale=rescale, pixel_size=pixel_size, review=review, review_rate=review_rate)
    names = list(analyzer.names.values())
    card_wbc, card_nrbc = model_cell_types(weights, names)
    wbc_list = wbc_classes or card_wbc
    nrbc_list = [c for c in (card_nrbc if nrbc_classes is None else nrbc_classes) if c in wbc_list]
    wbc = set(wbc_list)
    tile = tile or default_tile(weights, analyzer.imgsz)
    overlap = overlap if overlap is not None else tile // 3
    out.mkdir(parents=True, exist_ok=True)
    if annotated:
        (out / "annotated").mkdir(exist_ok=True)
    cells_by_image, rows_by_image, notes, skipped, crops, tiled = {}, {}, {}, {}, {}, []
    pending: list[tuple[str, np.ndarray]] = []

    def finish(name: str, image: np.ndarray, cells: list[Cell]) -> None:
        cells_by_image[name] = cells
        rows_by_image[name] = cell_rows(name, cells, wbc, review_conf)
        if report:
            crops[name] = gallery_crops(image, cells, wbc_list)
        if annotated:
            cv2.imwrite(str(out / "annotated" / f"{Path(name).stem}.jpg"), annotate(image, cells, wbc, review_conf))

    def flush() -> None:
        if pending:
            for (name, image, work, scale), cells in zip(pending, analyzer([w for _, _, w, _ in pending], [1.0] * len(pending))):
                finish(name, image, to_field(cells, scale))
            pending.clear()

    used_names = set()
    for path, loaded, scale in _scaled(analyzer, TQDM(files, desc="images")):
        name = path.name if path.name not in used_names else f"{path.parent.name}_{path.name}"
        used_names.add(name)
        if loaded.image is None:
            skipped[str(path)] = loaded.note
            continue
        work = resize(loaded.image, scale.factor)  # tiles and the letterbox see the field at the training scale
        notes[name] = {"path": str(path), "width": loaded.image.shape[1], "height": loaded.image.shape[0], "note": loaded.note,
                       "scale": scale.how, "rbc_diameter_px": _round(scale.rbc_diameter_px, 1),
                       "pixel_size_um": _round(scale.pixel_size_um, 4), "scale_factor": round(scale.factor, 4)}
        if tile_needed(*work.shape[:2], tile):
            tiled.append(name)
            finish(name, loaded.image, to_field(analyze_tiled(analyzer, work, tile, overlap, batch), scale))
        else:
            pending.append((name, loaded.image, work, scale))
            if len(pending) == batch:
                flush()
    flush()
    if not cells_by_image:
        raise UsageError(f"none of the {len(files)} files under {source} could be read: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))

    diff = differential(cells_by_image, wbc_list, review_conf, nrbc_list)
    op = analyzer.operating_point
    diff["review"] = ({"model": str(analyzer.review_path), **op.as_dict()} if op else
                      {"model": None, "review_conf": review_conf})
    rows = [r for image_rows in rows_by_image.values() for r in image_rows]
    fields = list(dict.fromkeys(k for r in rows for k in r)) or ["image"]
    with (out / "cells.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    (out / "cells.json").write_text(json.dumps([{"image": n, **notes[n], "cells": rows_by_image[n]} for n in cells_by_image], indent=1))
    (out / "differential.json").write_text(json.dumps(diff, indent=2))
    md = [f"# Differential count ({len(cells_by_image)} images)", "", differential_table(diff["run"])]
    for n, counts in diff["per_image"].items():
        md += ["", f"## {n}", "", differential_table(counts)]
    (out / "differential.md").write_text("\n".join(md) + "\n")
    with (out / "skipped.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("file", "reason"), *skipped.items()])
    if report:
        write_report(out / "report.html", f"WBC analysis: {Path(str(source)).name}", diff, cells_by_image, crops, wbc_list, skipped,
                     scale_note(notes, analyzer.reference_rbc_px))
    summary = {"images": len(cells_by_image), "skipped": len(skipped), "converted": sum(1 for v in notes.values() if v["note"]),
               "tiled": len(tiled), "rescaled": sum(1 for v in notes.values() if v["scale_factor"] != 1),
               "scale": dict(Counter(v["scale"] for v in notes.values())), "pixel_size_um": pixel_size,
               "train_rbc_diameter_px": analyzer.reference_rbc_px, "train_field_size": analyzer.field_size, "classes": names,
               "cells": len(rows), "wbc": diff["run"]["wbc"], "seconds": time.time() - start,
               "weights": str(weights), "head": str(analyzer.head_path) if analyzer.head else None, "imgsz": analyzer.imgsz,
               "conf": conf, "review": diff["review"], "tile": tile, "overlap": overlap, "wbc_classes": wbc_list,
               "nrbc_classes": nrbc_list}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(differential_table(diff["run"]))
    for path, reason in skipped.items():
        log(f"skipped {path}: {reason}")
    log(f"{summary['images']} images ({summary['rescaled']} resized to the training scale, {summary['tiled']} tiled, "
        f"{summary['converted']} converted), {summary['skipped']} skipped, "
        f"{summary['cells']} cells, {summary['wbc']} WBC in {summary['seconds']:.1f} s; written to {out}")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="an image, a folder, a glob, or a text file of image paths")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="detector (default: the shipped model); its attribute head beside it is used")
    p.add_argument("--head", help="attribute head file, if not beside the weights")
    p.add_argument("--no-head", action="store_true")
    p.add_argument("--imgsz", type=int, help="default: the head's, else the detector's training size")
    p.add_argument("--conf", type=float, default=0.25, help="minimum confidence of a cell")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU")
    p.add_argument("--review-rate", type=float, help="share of cells of known types sent to 'unidentified' for review, as measured "
                   "on val (default: the model's stored operating point, 5%%); cells unlike the training cells or with a low "
                   "calibrated type probability are the ones sent")
    p.add_argument("--no-review-model", action="store_true", help="ignore the review model beside the weights; --review-conf decides")
    p.add_argument("--review-conf", type=float, default=0.5, help="without a review model: WBC-type cells below this confidence "
                   "go to 'unidentified'")
    p.add_argument("--wbc-classes", nargs="+", help="which classes are WBC types (default: from the model card beside the weights, else all)")
    p.add_argument("--nrbc-classes", nargs="*", help="which of them are nucleated red cells, reported per 100 WBC outside the "
                   "differential (default: from the model card; none when given without names)")
    p.add_argument("--pixel-size", type=float, help="µm per pixel of the fields (default: estimated per field from the median red-cell "
                   "diameter, 7.5 µm); each field is resized to the scale the model was trained on (its model card records it)")
    p.add_argument("--no-rescale", action="store_true", help="run every field at the size it comes (no resizing to the training scale)")
    p.add_argument("--tile", type=int, help="fields (after resizing to the training scale) with a side above 1.5 x this many pixels "
                   "are tiled (default: the training fields' size from the model card, else 1.5 x the input size)")
    p.add_argument("--overlap", type=int, help="tile overlap in pixels, larger than a cell (default: a third of --tile)")
    p.add_argument("--cell-classifier", help="yaml naming detector classes and a crop classifier to call on them")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu, 0 or cuda:0")
    p.add_argument("--no-annotated", action="store_true", help="do not write annotated images")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    args = p.parse_args(argv)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "predict", args.exist_ok)
    predict(args.source, out, args.weights, False if args.no_head else args.head, args.imgsz, args.conf, args.iou, args.review_conf,
            args.tile, args.overlap, args.batch, args.device, args.cell_classifier, args.wbc_classes, not args.no_annotated, not args.no_report, nrbc_classes=args.nrbc_classes,
            pixel_size=args.pixel_size, rescale=not args.no_rescale, review_rate=args.review_rate,
            review=False if args.no_review_model else None)

