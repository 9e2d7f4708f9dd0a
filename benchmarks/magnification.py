"""How much does another magnification cost? A dataset's val fields resized by known factors,
evaluated with test.py's own code: WBC type per field, mAP, and the estimated scale per factor.

    .venv/bin/python benchmarks/magnification.py --data data/pbc_wbcatt.yaml --factors 1 0.5 2 --name pbc

For each factor a copy of the raw dataset is made under ``.cache/magnification/<name>/x<factor>/``
with the val images resized (labels are normalised and stay as they are) and every other split
linked unchanged (factor 1: the original); then :func:`wbc.evaluation.evaluate.evaluate` runs on it
with the model's rescaling on. Writes ``runs/magnification/<name>/metrics.json`` and a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402

from wbc.evaluation.evaluate import evaluate  # noqa: E402
from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, cache_root, new_run_dir  # noqa: E402
from wbc.schema import load_spec  # noqa: E402


def resized_copy(root: Path, out: Path, factor: float, split: str) -> Path:
    """``root`` mirrored into ``out`` by links, the images of ``split`` (any ``images/<split>`` folder) resized."""
    if (out / ".complete").is_file():
        return out
    for path in sorted(root.rglob("*")):
        target = out / path.relative_to(root)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.parent.name == split and path.parent.parent.name == "images":
            image = cv2.imread(str(path))
            interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            cv2.imwrite(str(target), cv2.resize(image, None, fx=factor, fy=factor, interpolation=interpolation),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        elif not target.exists():
            target.symlink_to(path.resolve())
    (out / ".complete").write_text("")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--factors", nargs="+", type=float, default=[1.0, 0.5, 2.0], help="1 = the fields as they are")
    p.add_argument("--split", default="val")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    spec = load_spec(args.data)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "magnification")
    rows, result = [], {}
    for factor in args.factors:
        root = spec.root if factor == 1 else resized_copy(spec.root, cache_root() / "magnification" / spec.name / f"x{factor:g}", factor, args.split)
        m = evaluate(args.weights, args.data, out / f"x{factor:g}", args.split, data_root=str(root), plots=False, log=lambda *a: None)
        field = m.get("field_accuracy", {})
        scale = next(iter(m.get("scale", {}).get("per_origin", {}).values()), {})
        result[f"{factor:g}"] = {"mAP50": m["detection"]["cocoeval"]["mAP50"], "mAP50-95": m["detection"]["cocoeval"]["mAP50-95"],
                                 "field_accuracy": field.get("accuracy"), "median_rbc_diameter_px": scale.get("median_rbc_diameter_px"),
                                 "median_factor": scale.get("median_factor")}
        r = result[f"{factor:g}"]
        rows.append(f"| {factor:g} | {r['median_rbc_diameter_px'] or float('nan'):.1f} | {r['median_factor'] or float('nan'):.3f} | "
                    f"{r['mAP50']:.3f} | {r['mAP50-95']:.3f} | {(r['field_accuracy'] or float('nan')) * 100:.2f}% |")
        print(rows[-1], flush=True)
    (out / "metrics.json").write_text(json.dumps({"settings": vars(args), "result": result}, indent=1))
    table = "\n".join(["| factor | red cells (px) | resize | mAP50 | mAP50-95 | WBC type per field |", "|---|---|---|---|---|---|", *rows])
    (out / "summary.md").write_text(f"# {args.weights} on {args.data} {args.split}, fields resized\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
