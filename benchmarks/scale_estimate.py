"""How well wbc.scale reads the red-cell diameter of real fields, per source, on a sample of fields:

(a) against the labels, where red cells are boxed: the field's label-derived diameter is the median
    sqrt(w * h) of its red-cell boxes that the border does not cut (fields with fewer than 3 such
    boxes are left out of this part). Reported: the median ratio estimate / label, the fraction of
    fields within 10% of their label, and within 10% of label x the source's median ratio (field to
    field agreement, with the source's box margin taken out: boxes are drawn looser than the cells);
(b) equivariance: each field resized by each factor (cv2.resize, INTER_AREA down, INTER_LINEAR up)
    should read factor x its own diameter; reported per factor: the median and worst
    |estimate(f) / (f * estimate(1)) - 1| and the fraction within 10% (no estimate counts as a miss);
(c) time per field of estimate_scale on the original fields (best of ``--repeats`` per field, then
    the median and 90th percentile over fields; OpenCV's thread count as it is).

    .venv/bin/python benchmarks/scale_estimate.py --fields 40

Writes runs/scale/<name>/results.json (per source and per field) and prints a table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np

from wbc.errors import DatasetError
from wbc.formats import read_dataset
from wbc.paths import REPO_ROOT, data_root, new_run_dir
from wbc.scale import estimate_scale
from wbc.schema import load_spec
from wbc.sources import image_sources

FACTORS = (0.5, 0.75, 1.5, 2.0, 3.0)
EDGE = 2.0  # px: a box this close to the border is taken as cut by it


def label_diameter(boxes, width: int, height: int) -> float | None:
    """Median sqrt(w * h) of the red-cell ``boxes`` (xyxy px) that the border does not cut, or None
    with fewer than 3 such boxes."""
    sizes = [np.sqrt((x1 - x0) * (y1 - y0)) for x0, y0, x1, y1 in boxes
             if x0 > EDGE and y0 > EDGE and x1 < width - EDGE and y1 < height - EDGE]
    return float(np.median(sizes)) if len(sizes) >= 3 else None


def labelled(yaml: str, rbc_class: str) -> dict[str, list[tuple[Path, float | None]]]:
    """Origin -> [(val image, label-derived red-cell diameter in px or None)] of a dataset yaml."""
    spec = load_spec(REPO_ROOT / yaml)
    cls = spec.names.index(rbc_class)
    by_origin: dict[str, list] = {}
    for field in read_dataset(spec).splits["val"]:
        diameter = label_diameter([b.xyxy for b in field.boxes if b.cls == cls], field.width, field.height)
        by_origin.setdefault(spec.origin_of(field.width, field.height), []).append((field.image, diameter))
    return by_origin


def sources() -> dict[str, list[tuple[Path, float | None]]]:
    """Source name -> [(image, label-derived diameter or None)]; sources whose data is absent are left out."""
    out = {}
    for name, folder in (("PBC val", data_root() / "pbc" / "images" / "val"),
                         ("LeukemiaAttri samples", data_root() / "leukemiaattri_samples")):
        if folder.is_dir():
            out[name] = [(p, None) for p in image_sources(folder)]
    for yaml, name in (("data/bccd.yaml", "{} val"), ("data/txl_pbc.yaml", "TXL-PBC val {}")):
        try:
            out.update({name.format(origin): fields for origin, fields in labelled(yaml, "RBC").items()})
        except (DatasetError, OSError) as e:  # absent data: reported, the other sources still run
            print(f"{yaml}: left out ({e})")
    return out


def resized(image: np.ndarray, f: float) -> np.ndarray:
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def run_field(path: Path, label: float | None, factors, repeats: int) -> dict:
    image = cv2.imread(str(path))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        estimate = estimate_scale(image)
        times.append(time.perf_counter() - t)
    d = estimate.diameter_px
    row = {"image": str(path), "size": f"{image.shape[1]}x{image.shape[0]}", "diameter_px": d, "cells": estimate.cells,
           "label_px": label, "ms": 1000 * min(times), "rescaled": {}}  # rescaled: factor -> estimate(f) / (f * d) - 1
    if d:
        for f in factors:
            df = estimate_scale(resized(image, f)).diameter_px
            row["rescaled"][str(f)] = None if df is None else df / (f * d) - 1
    return row


def summarise(rows: list[dict], factors) -> dict:
    est = [r for r in rows if r["diameter_px"]]
    ms = [r["ms"] for r in rows]
    s = {"fields": len(rows), "estimated": len(est), "ms_median": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90)),
         "diameter_px_median": float(np.median([r["diameter_px"] for r in est])) if est else None}
    with_label = [r for r in est if r["label_px"]]
    s["labelled"] = len(with_label)
    if with_label:
        ratios = np.array([r["diameter_px"] / r["label_px"] for r in with_label])
        med = float(np.median(ratios))
        s |= {"label_px_median": float(np.median([r["label_px"] for r in with_label])), "ratio_median": med,
              "within10_of_label": float(np.mean(np.abs(ratios - 1) < 0.1)),
              "within10_field_to_field": float(np.mean(np.abs(ratios / med - 1) < 0.1))}
    s["equivariance"] = {}
    for f in factors:
        errors = np.array([np.inf if r["rescaled"][str(f)] is None else abs(r["rescaled"][str(f)]) for r in est])
        if errors.size:
            s["equivariance"][str(f)] = {"median": float(np.median(errors)), "worst": float(errors.max()),
                                         "within10": float(np.mean(errors < 0.1))}
    return s


def table(summary: dict, factors) -> str:
    def num(s, key, spec):
        return format(s[key], spec) if s.get(key) is not None else "-"

    columns = ["fields", "est.", "diam px", "label px", "ratio", "w10", "w10 f2f", *(f"x{f:g}" for f in factors), "worst", "ms", "ms p90"]
    head = f"{'source':24s} " + " ".join(f"{c:>7s}" for c in columns)
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        eq = s["equivariance"]
        cells = [str(s["fields"]), str(s["estimated"]), num(s, "diameter_px_median", ".1f"), num(s, "label_px_median", ".1f"),
                 num(s, "ratio_median", ".2f"), num(s, "within10_of_label", ".2f"), num(s, "within10_field_to_field", ".2f"),
                 *(num(eq.get(str(f), {}), "within10", ".2f") for f in factors),
                 f"{max((e['worst'] for e in eq.values()), default=float('nan')):.2f}", f"{s['ms_median']:.2f}", f"{s['ms_p90']:.2f}"]
        lines.append(f"{name:24s} " + " ".join(f"{c:>7s}" for c in cells))
    lines += ["", f"{'equivariance error':24s} " + " ".join(f"{f'x{f:g} med/worst':>16s}" for f in factors)]
    for name, s in summary.items():
        eq = s["equivariance"]
        lines.append(f"{name:24s} " + " ".join(f"{eq[str(f)]['median']:7.3f} /{eq[str(f)]['worst']:7.3f}" if str(f) in eq else f"{'-':>16s}"
                                               for f in factors))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fields", type=int, default=40, help="fields per source (a seeded random sample)")
    p.add_argument("--factors", type=float, nargs="+", default=list(FACTORS))
    p.add_argument("--repeats", type=int, default=3, help="timed calls per field; the fastest counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="exp")
    args = p.parse_args()

    rng = np.random.default_rng(args.seed)
    rows, summary = {}, {}
    for name, fields in sources().items():
        sample = [fields[i] for i in sorted(rng.choice(len(fields), min(args.fields, len(fields)), replace=False))]
        rows[name] = [run_field(path, label, args.factors, args.repeats) for path, label in sample]
        summary[name] = summarise(rows[name], args.factors)
    print(table(summary, args.factors))
    print("est.: fields with an estimate; diam px: their median estimate; ratio: estimate / label-derived diameter (median);\n"
          "w10: fraction within 10% of the label; w10 f2f: of label x the source's ratio; xF: fraction of fields within 10% of\n"
          "F x their own estimate when resized by F; worst: the largest such error, all factors; ms: per field (best of repeats)")
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "scale")
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "summary": summary, "fields": rows}, indent=2))
    print(f"written to {out / 'results.json'}")


if __name__ == "__main__":
    main()
