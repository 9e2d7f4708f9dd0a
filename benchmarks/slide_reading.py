"""Whole-slide reading measured on a generated slide of real fields.

    .venv/bin/python benchmarks/slide_reading.py --side 40000 --name pbc_40k

Builds a pyramidal TIFF ``--side`` px square (:mod:`wbc.synth_slide`): its monolayer is a grid of PBC
val fields enlarged 2x (so the level nearest the training scale is level 1, not 0), with a thick body
and a feathered edge beside it. Then runs ``predict.py --source slide.tif`` as a user does, in its own
process, and reports its peak memory, time and fields analysed; and compares every WBC the model
finds on a placed field *as a field* (the PBC image through the same model, at the slide's scale) with
what it finds at that place in the slide: same class or not; and both against the field's PBC label. Writes ``runs/benchmarks/slide/<name>/`` (the slide,
the predict run, ``metrics.json``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, data_root, new_run_dir  # noqa: E402

UPSCALE = 2.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=40000, help="slide side in level-0 pixels")
    p.add_argument("--fields", type=int, default=300, help="PBC val fields to place (cycled over the monolayer)")
    p.add_argument("--slide-wbc", type=int, default=200, help="predict.py --slide-wbc")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    from wbc.inference import WBCAnalyzer, model_card
    from wbc.synth_slide import SlideLayout, write_slide

    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "slide")
    out.mkdir(parents=True)
    images = sorted((data_root() / "pbc" / "images" / "val").glob("*.jpg"))
    chosen = [images[i] for i in sorted(np.random.default_rng(0).choice(len(images), min(args.fields, len(images)), replace=False))]
    fields = [cv2.imread(str(f)) for f in chosen]
    reference = model_card(DEFAULT_WEIGHTS)["train_rbc_diameter_px"]
    start = time.time()
    layout = SlideLayout(fields, args.side, args.side, UPSCALE)
    slide = write_slide(out / "slide.tif", layout, 7.5 / (reference * UPSCALE))
    written = time.time() - start
    print(f"slide {args.side} x {args.side} written in {written:.0f} s ({slide.stat().st_size / 1e6:.0f} MB), {len(layout.placed)} fields placed")

    start = time.time()
    run = subprocess.run([sys.executable, str(REPO_ROOT / "predict.py"), "--source", str(slide), "--slide-wbc", str(args.slide_wbc),
                          "--name", "slide", "--exist-ok"], env={**__import__("os").environ, "WBC_RUNS": str(out / "runs")},
                         capture_output=True, text=True)
    seconds = time.time() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if run.returncode:
        sys.exit(f"predict.py failed:\n{run.stderr[-2000:]}")
    (entry,) = json.loads((out / "runs" / "predict" / "slide" / "cells.json").read_text())
    info = entry["slide"]
    wbc = set(model_card(DEFAULT_WEIGHTS)["wbc_classes"])
    slide_cells = [c for c in entry["cells"] if c["class"] in wbc]
    centres = np.array([((c["x1"] + c["x2"]) / 2, (c["y1"] + c["y2"]) / 2) for c in slide_cells]).reshape(-1, 2)

    # the same model on the placed fields analysed, as fields
    side = info["field_core_px"] * info["downsample"]
    analysed = [(x, y) for x, y in info["fields"]]
    inside = [pl for pl in layout.placed if any(x <= pl.x + layout.cell / 2 < x + side and y <= pl.y + layout.cell / 2 < y + side
                                                for x, y in analysed)]
    analyzer = WBCAnalyzer(DEFAULT_WEIGHTS)
    comparisons = {}
    import tiffslide

    reader = tiffslide.TiffSlide(slide)
    for source in ("original field", "field cut from the slide"):
        comparisons[source] = compare(source, inside, chosen, fields, analyzer, reader, layout, analysed, side, centres, slide_cells, wbc)
    metrics = {"side": args.side, "levels": 6, "slide_mb": round(slide.stat().st_size / 1e6, 1), "write_seconds": round(written, 1),
               "fields_placed": len(layout.placed), "predict_seconds": round(seconds, 1), "predict_peak_rss_mb": round(peak_mb),
               "slide": {k: v for k, v in info.items() if k != "fields"}, "as_field_vs_in_slide": comparisons}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


def compare(source, inside, chosen, fields, analyzer, reader, layout, analysed, side, centres, slide_cells, wbc) -> dict:
    """Each WBC the model finds on a placed field, analysed as a field at the slide's scale (factor 1: the
    metadata gives level 1 the training scale), against the slide cell at its place: same class, another,
    none; and both against the field's PBC label. ``source``: the original field, or the same field read
    back from the slide's level 1 (its JPEG tiles, resampled), which leaves only the sweep's own effect."""
    same = other = missed = 0
    truth_hits = {"as_field": 0, "in_slide": 0, "fields": 0}
    for pl in inside:
        label = chosen[pl.field].name.split("_")[0]  # PBC's file names start with the field's class
        if source == "original field":
            image = fields[pl.field]
        else:
            h, w = fields[pl.field].shape[:2]
            image = cv2.cvtColor(np.asarray(reader.read_region((pl.x, pl.y), 1, (w, h)).convert("RGB")), cv2.COLOR_RGB2BGR)
        for c in analyzer([image], [1.0])[0]:
            if c.class_name not in wbc:
                continue
            truth = np.array([pl.x + (c.box[0] + c.box[2]) / 2 * UPSCALE, pl.y + (c.box[1] + c.box[3]) / 2 * UPSCALE])
            if not any(x <= truth[0] < x + side and y <= truth[1] < y + side for x, y in analysed):
                continue  # its centre lies in a field not analysed
            d = np.linalg.norm(centres - truth, axis=1) if len(centres) else np.array([])
            if not len(d) or d.min() > 40:
                missed += 1
            elif slide_cells[int(d.argmin())]["class"] == c.class_name:
                same += 1
            else:
                other += 1
            if len(d) and d.min() <= 40:
                truth_hits["fields"] += 1
                truth_hits["as_field"] += c.class_name == label
                truth_hits["in_slide"] += slide_cells[int(d.argmin())]["class"] == label
    n = max(1, same + other + missed)
    return {"wbc_compared": same + other + missed, "same_class": same, "other_class": other, "not_found_in_slide": missed,
            "same_class_share": round(same / n, 4), "label_accuracy_as_field": round(truth_hits["as_field"] / max(1, truth_hits["fields"]), 4),
            "label_accuracy_in_slide": round(truth_hits["in_slide"] / max(1, truth_hits["fields"]), 4)}


if __name__ == "__main__":
    main()
