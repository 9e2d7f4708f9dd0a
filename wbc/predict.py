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
from wbc.arguments import check_overlap
from wbc.errors import Interrupted, UsageError
from wbc.inference import Cell, FieldScale, WBCAnalyzer, model_card
from wbc.paths import new_run_dir, runs_root
from wbc.predict_options import PredictOptions
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


def image_names(files: list[Path]) -> dict[Path, str]:
    """The name each file goes by in the run's outputs: its file name, or ``<folder>_<file name>`` where
    two files of the run share a name."""
    counts = Counter(p.name for p in files)
    return {p: p.name if counts[p.name] == 1 else f"{p.parent.name}_{p.name}" for p in files}


def annotated_name(name: str, names_of: dict[Path, str]) -> str:
    """``annotated/`` file of an image: ``<stem>.jpg``, or ``<stem>_<suffix>.jpg`` where images of the run
    share a stem (``good.jpg`` and ``good.png``), so that no annotated image overwrites another."""
    stem, suffix = Path(name).stem, Path(name).suffix
    shared = sum(1 for n in names_of.values() if Path(n).stem == stem) > 1
    return f"{stem}_{suffix.lstrip('.')}.jpg" if shared else f"{stem}.jpg"


def input_note(analyzer: WBCAnalyzer, asked: int | None) -> str:
    """One line on the network input size used, against the size the model was trained at."""
    rounded = f", {asked} rounded up to a multiple of the stride {analyzer.stride}" if asked and asked != analyzer.imgsz else ""
    return f"input size {analyzer.imgsz} px (the model was trained at {analyzer.train_imgsz} px{rounded})"


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


def predict(source: str | Path, out: Path, options: PredictOptions | None = None, log=print, **changes) -> dict:
    """Analyse every image of ``source`` and write the outputs to ``out``. Returns the run summary.
    ``options``: see :class:`~wbc.predict_options.PredictOptions` (default: its defaults); ``changes``
    override its fields, e.g. ``predict(src, out, conf=0.3, head=False)``."""
    from ultralytics.utils import TQDM

    from wbc.classify.cell_classifier import CellClassifier

    o = (options or PredictOptions()).replace(**changes)
    start = time.time()
    files = image_sources(source)
    analyzer = WBCAnalyzer(o.weights, o.head, o.imgsz, o.conf, o.iou, o.device,
                           cell_classifier=CellClassifier.from_yaml(o.cell_classifier, o.device) if o.cell_classifier else None,
                           rescale=o.rescale, pixel_size=o.pixel_size, review=o.review, review_rate=o.review_rate)
    names = list(analyzer.names.values())
    card_wbc, card_nrbc = model_cell_types(o.weights, names)
    wbc_list = o.wbc_classes or card_wbc
    nrbc_list = [c for c in (card_nrbc if o.nrbc_classes is None else o.nrbc_classes) if c in wbc_list]
    wbc = set(wbc_list)
    review_conf, batch = o.review_conf, o.batch
    tile = o.tile or default_tile(o.weights, analyzer.imgsz)
    overlap = o.overlap if o.overlap is not None else tile // 3
    check_overlap(tile, overlap)
    out.mkdir(parents=True, exist_ok=True)
    if o.annotated:
        (out / "annotated").mkdir(exist_ok=True)
    cells_by_image, rows_by_image, notes, skipped, crops, tiled = {}, {}, {}, {}, {}, []
    pending: list[tuple[str, np.ndarray]] = []

    def finish(name: str, image: np.ndarray, cells: list[Cell]) -> None:
        cells_by_image[name] = cells
        rows_by_image[name] = cell_rows(name, cells, wbc, review_conf)
        if o.report:
            crops[name] = gallery_crops(image, cells, wbc_list)
        if o.annotated:
            cv2.imwrite(str(out / "annotated" / annotated_name(name, names_of)), annotate(image, cells, wbc, review_conf))

    def flush() -> None:
        if pending:
            for (name, image, work, scale), cells in zip(pending, analyzer([w for _, _, w, _ in pending], [1.0] * len(pending))):
                finish(name, image, to_field(cells, scale))
            pending.clear()

    log(input_note(analyzer, o.imgsz))
    names_of = image_names(files)
    interrupted = False
    try:
        for path, loaded, scale in _scaled(analyzer, TQDM(files, desc="images")):
            name = names_of[path]
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
    except KeyboardInterrupt:  # keep what is done, marked incomplete
        interrupted = True
        for name, *_ in pending:
            notes.pop(name, None)
    if interrupted and not cells_by_image:
        raise Interrupted(f"stopped by Ctrl-C before the first field was done; nothing written to {out}")
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
    if o.report:
        write_report(out / "report.html", f"WBC analysis: {Path(str(source)).name}", diff, cells_by_image, crops, wbc_list, skipped,
                     scale_note(notes, analyzer.reference_rbc_px))
    summary = {"images": len(cells_by_image), "skipped": len(skipped), "converted": sum(1 for v in notes.values() if v["note"]),
               "tiled": len(tiled), "rescaled": sum(1 for v in notes.values() if v["scale_factor"] != 1),
               "scale": dict(Counter(v["scale"] for v in notes.values())), "pixel_size_um": o.pixel_size,
               "train_rbc_diameter_px": analyzer.reference_rbc_px, "train_field_size": analyzer.field_size, "classes": names,
               "cells": len(rows), "wbc": diff["run"]["wbc"], "seconds": time.time() - start,
               "complete": not interrupted, "files": len(files),
               "weights": str(o.weights), "head": str(analyzer.head_path) if analyzer.head else None, "imgsz": analyzer.imgsz,
               "conf": o.conf, "review": diff["review"], "tile": tile, "overlap": overlap, "wbc_classes": wbc_list,
               "nrbc_classes": nrbc_list}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(differential_table(diff["run"]))
    for path, reason in skipped.items():
        log(f"skipped {path}: {reason}")
    log(f"{summary['images']} images ({summary['rescaled']} resized to the training scale, {summary['tiled']} tiled, "
        f"{summary['converted']} converted), {summary['skipped']} skipped, "
        f"{summary['cells']} cells, {summary['wbc']} WBC in {summary['seconds']:.1f} s; written to {out}")
    if interrupted:
        raise Interrupted(f"stopped by Ctrl-C after {summary['images'] + summary['skipped']} of {len(files)} files; what was done "
                          f"is written to {out}, marked incomplete (summary.json: \"complete\": false)")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="an image, a folder, a glob, or a text file of image paths (relative to its folder)")
    PredictOptions.add_arguments(p)
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    args = p.parse_args(argv)
    options = PredictOptions.from_args(args)
    predict(args.source, new_run_dir(args.name, runs_root() / "predict", args.exist_ok), options)
