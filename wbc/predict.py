"""Whole-smear inference for a lab: every cell with its class, confidence, attributes and (where a
cell classifier is configured) its call; the differential count per smear and per run; annotated
images; a self-contained ``report.html`` gallery.

    python predict.py --source ../shared/data/leukemiaattri_samples --name samples

Writes ``runs/predict/<name>/``: ``cells.csv`` (one row per cell), ``cells.json`` (per image: size,
conversion note, cells), ``differential.json`` and ``differential.md`` (per smear and per run),
``annotated/<image>.jpg``, ``report.html``, ``skipped.csv`` (files that could not be used, and why).
Each field is first resized to the scale the model was trained on (``--pixel-size``, else estimated from
its red cells; reported per field in ``cells.json``); a resized field with a side above 1.5 x ``--tile``
pixels is then analysed in overlapping tiles (see :mod:`wbc.tiling`). A whole slide (pyramidal TIFF,
SVS, NDPI) is read field by field in its monolayer (see :mod:`wbc.slide`). The files are analysed in
chunks (:mod:`wbc.analysis`), in this process or on Dask workers (``--workers``, ``--scheduler``),
each kept in ``parts/`` as it finishes: ``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from wbc.analysis import Analysis, ChunkResult, analyze_chunk, annotated_name, chunks_of, image_names
from wbc.arguments import POSITIVE_INT
from wbc.differential import differential, differential_table, review_bin, review_reason
from wbc.distributed import map_chunks
from wbc.errors import Interrupted, UsageError
from wbc.inference import Cell, WBCAnalyzer
from wbc.paths import new_run_dir, run_dir_of, runs_root
from wbc.predict_options import PredictOptions
from wbc.report_html import write_report
from wbc.rescale import SCALE_GROUP
from wbc.sources import image_sources


def input_note(analyzer: WBCAnalyzer, asked: int | None) -> str:
    """One line on the network input size used, against the size the model was trained at."""
    rounded = f", {asked} rounded up to a multiple of the stride {analyzer.stride}" if asked and asked != analyzer.imgsz else ""
    return f"input size {analyzer.imgsz} px (the model was trained at {analyzer.train_imgsz} px{rounded})"


def scale_note(notes: dict[str, dict], reference_px: float | None) -> str:
    """One line on how the run's fields were resized to the training scale, for the report."""
    if not reference_px:
        return "Fields were analysed at the size they came (the model records no training scale)."
    factors = sorted(n["scale_factor"] for n in notes.values())
    diameters = sorted(n["rbc_diameter_px"] for n in notes.values() if n["rbc_diameter_px"])
    found = f"median red-cell diameter {diameters[len(diameters) // 2]:.0f} px" if diameters else "no red-cell estimate"
    return (f"Fields were resized to the model's training scale (red cells {reference_px:.0f} px): {found}, resize factor "
            f"{factors[0]:.2f}–{factors[-1]:.2f} (per field in cells.json).")


def colour_note(reference) -> str:
    """One sentence on the colours the detector saw the fields in, for the report (after :func:`scale_note`)."""
    if reference is None:
        return " Fields were analysed in their own colours."
    return (f" The detector saw each field in the training fields' colours (its CIELAB mean and spread moved to those of "
            f"{reference.fields} {reference.source}; the images here are as they came).")


def type_note(analyzer) -> str:
    """One sentence on who named the WBC types, for the report (after :func:`colour_note`)."""
    if not analyzer.type_head:
        return " WBC types are the detector's classes."
    return (f" WBC types are the most likely of the detector's classes and a type head on its features together "
            f"(the head weighing {analyzer.type_share:g}).")


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


def predict(source: str | Path, out: Path, options: PredictOptions | None = None, log=print, workers: int | None = None,
            scheduler: str | None = None, resume: bool = False, **changes) -> dict:
    """Analyse every image of ``source`` and write the outputs to ``out``. Returns the run summary.
    ``options``: see :class:`~wbc.predict_options.PredictOptions` (default: its defaults); ``changes``
    override its fields, e.g. ``predict(src, out, conf=0.3, head=False)``. ``workers`` (> 1): that many
    local worker processes; ``scheduler``: a Dask scheduler's address (:mod:`wbc.distributed`); the
    outputs are the same either way. Each chunk is kept in ``out/parts/`` as it finishes; ``resume``
    continues an interrupted run in ``out`` from them."""
    from ultralytics.utils import TQDM

    o = (options or PredictOptions()).replace(**changes)
    start = time.time()
    files = image_sources(source)
    names_of = image_names(files)
    chunks = chunks_of(files)
    analysis = Analysis(o)  # in this process too: the options and the weights are checked before any worker starts
    analyzer, wbc_list, nrbc_list = analysis.analyzer, analysis.wbc_list, analysis.nrbc_list
    wbc, review_conf = set(wbc_list), o.review_conf
    done = open_parts(out, o, [[str(p) for p in c] for c in chunks], resume)
    all_names = list(names_of.values())

    def keep(index: int, result: ChunkResult) -> None:
        for name, r in result.images.items():
            if r.annotated:
                (out / "annotated" / f"{Path(annotated_name(name, all_names)).stem}{r.annotated_suffix}").write_bytes(r.annotated)
        write_part(out, index, result)
        done[index] = result

    todo = [i for i in range(len(chunks)) if i not in done]
    log(input_note(analyzer, o.imgsz))
    if resume:
        log(f"resuming {out}: {len(done)} of {len(chunks)} chunks done before")
    interrupted = False
    try:
        if scheduler or (workers or 1) > 1:
            threads = max(1, (os.cpu_count() or 1) // workers) if workers and not scheduler else None
            tasks = [(i, (o.as_dict(), [str(p) for p in chunks[i]], {str(p): names_of[p] for p in chunks[i]}, threads)) for i in todo]
            map_chunks(analyze_chunk, tasks, keep, workers, scheduler,
                       progress=lambda it, n: TQDM(it, total=n, desc=f"chunks of up to {SCALE_GROUP} fields"))
        else:
            bar = TQDM(total=sum(len(chunks[i]) for i in todo), desc="files")
            for i in todo:
                keep(i, analysis.chunk(chunks[i], names_of, bar.update))
            bar.close()
    except KeyboardInterrupt:  # keep what is done, marked incomplete
        interrupted = True
    results = [done[i] for i in sorted(done)]
    images = {n: r for result in results for n, r in result.images.items()}
    skipped = {k: v for result in results for k, v in result.skipped.items()}
    if interrupted and not images:
        raise Interrupted(f"stopped by Ctrl-C before the first chunk was done; nothing written to {out}")
    if not images:
        raise UsageError(f"none of the {len(files)} files under {source} could be read: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))

    cells_by_image = {n: r.cells for n, r in images.items()}
    notes = {n: r.note for n, r in images.items()}
    rows_by_image = {n: cell_rows(n, r.cells, wbc, review_conf) for n, r in images.items()}
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
        write_report(out / "report.html", f"WBC analysis: {Path(str(source)).name}", diff, cells_by_image,
                     {n: r.crops for n, r in images.items()}, wbc_list, skipped,
                     scale_note(notes, analyzer.reference_rbc_px) + colour_note(analyzer.colour_reference) + type_note(analyzer))
    summary = {"images": len(cells_by_image), "skipped": len(skipped), "converted": sum(1 for v in notes.values() if v["note"]),
               "tiled": sum(1 for r in images.values() if r.tiled), "rescaled": sum(1 for v in notes.values() if v["scale_factor"] != 1),
               "scale": dict(Counter(v["scale"] for v in notes.values())), "pixel_size_um": o.pixel_size,
               "train_rbc_diameter_px": analyzer.reference_rbc_px, "train_field_size": analyzer.field_size, "classes": analysis.names,
               "colour_reference": analyzer.colour_reference.to_card() if analyzer.colour_reference else None,
               "cells": len(rows), "wbc": diff["run"]["wbc"], "seconds": time.time() - start,
               "complete": not interrupted and len(done) == len(chunks), "files": len(files), "chunks": len(chunks),
               "workers": workers or 1, "scheduler": scheduler,
               "weights": str(o.weights), "head": str(analyzer.head_path) if analyzer.head else None, "imgsz": analyzer.imgsz,
               "type_head": {"file": str(analyzer.type_head_path), "head_share": analyzer.type_share} if analyzer.type_head else None,
               "conf": o.conf, "review": diff["review"], "tile": analysis.tile, "overlap": analysis.overlap, "wbc_classes": wbc_list,
               "nrbc_classes": nrbc_list}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(differential_table(diff["run"]))
    for path, reason in skipped.items():
        log(f"skipped {path}: {reason}")
    log(f"{summary['images']} images ({summary['rescaled']} resized to the training scale, "
        f"{'in the training colours, ' if analyzer.colour_reference else ''}{summary['tiled']} tiled, "
        f"{summary['converted']} converted), {summary['skipped']} skipped, "
        f"{summary['cells']} cells, {summary['wbc']} WBC in {summary['seconds']:.1f} s; written to {out}")
    if interrupted:
        raise Interrupted(f"stopped by Ctrl-C after {summary['images'] + summary['skipped']} of {len(files)} files; what was done "
                          f"is written to {out}, marked incomplete (summary.json: \"complete\": false); --resume continues it")
    return summary


def open_parts(out: Path, o: PredictOptions, chunks: list[list[str]], resume: bool) -> dict[int, ChunkResult]:
    """The chunks already done in ``out/parts/`` (resume), else {} with the folder made; a resumed run
    must have the same options and files, or its parts would mix two analyses."""
    parts = out / "parts"
    plan = {"options": o.as_dict(), "chunks": chunks}
    if resume:
        if not (parts / "plan.json").is_file():
            raise UsageError(f"--resume: {out} holds no interrupted predict run (no {parts / 'plan.json'})")
        if json.loads((parts / "plan.json").read_text()) != json.loads(json.dumps(plan)):
            raise UsageError(f"--resume: {out} was started with other options or files; start a new --name instead")
        return {int(p.stem): ChunkResult.from_json(json.loads(p.read_text())) for p in sorted(parts.glob("[0-9]*.json"))}
    out.mkdir(parents=True, exist_ok=True)
    if parts.is_dir():
        shutil.rmtree(parts)  # --exist-ok: a new analysis replaces the old one's parts
    parts.mkdir()
    (out / "annotated").mkdir(exist_ok=True)
    (parts / "plan.json").write_text(json.dumps(plan))
    return {}


def write_part(out: Path, index: int, result: ChunkResult) -> None:
    """One finished chunk, written whole or not at all (a rename), so that a resumed run never reads half a part."""
    path = out / "parts" / f"{index:05d}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_json()))
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="an image, a folder, a glob, or a text file of image paths (relative to its folder)")
    PredictOptions.add_arguments(p)
    p.add_argument("--workers", type=POSITIVE_INT, default=1, help="worker processes on this machine (Dask LocalCluster); 1: this "
                   "process alone")
    p.add_argument("--scheduler", help="address of a Dask scheduler (e.g. tcp://10.0.0.5:8786) whose workers analyse the chunks; "
                   "they need this project and the files at the same paths")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run runs/predict/<name> from its finished chunks")
    args = p.parse_args(argv)
    options = PredictOptions.from_args(args)
    out = run_dir_of(args.name, runs_root() / "predict") if args.resume else new_run_dir(args.name, runs_root() / "predict", args.exist_ok)
    predict(args.source, out, options, workers=args.workers, scheduler=args.scheduler, resume=args.resume)
