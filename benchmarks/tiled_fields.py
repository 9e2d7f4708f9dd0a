"""WBCs on fields large enough to be tiled: mosaics of a split's fields (n x n), through predict.py.

    .venv/bin/python benchmarks/tiled_fields.py --data data/txl_pbc.yaml --class-map data/class_maps/pbc_to_txl.yaml --name txl

The labelled fields here mostly reach the network whole (at the training scale they are under 1.5
tiles), while a lab camera's fields (1-5 Mpx) are tiled. Each mosaic puts ``--grid`` x ``--grid``
fields of one origin side by side, their labels moved with them, so that tile edges fall across cells as on a large
field; the mosaics go through predict.py exactly as a user's fields do, and the same fields one by
one are scored beside them. Writes ``runs/tiled_fields/<name>/``: the mosaics as a YOLO dataset
(``data/``, with its yaml), ``metrics.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from wbc.canonical import CanonicalDataset, prepare  # noqa: E402
from wbc.evaluation import coco  # noqa: E402
from wbc.evaluation.report import origin_table  # noqa: E402
from wbc.evaluation.through_predict import add_split_arguments, predict_split, predict_switches, score_cells  # noqa: E402
from wbc.paths import REPO_ROOT, new_run_dir  # noqa: E402


def write_mosaics(canonical: CanonicalDataset, split: str, out: Path, n: int = 2) -> Path:
    """n x n mosaics of each origin's fields of ``split`` (in file order, a remainder under n² left
    out) as a YOLO dataset under ``out``; returns its yaml. The origin of a mosaic is told by its size."""
    fields = canonical.fields()
    fields = fields[fields["split"] == split].sort_values("image")
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    origins = {}
    for origin, group in fields.groupby("origin"):
        for size, same in group.groupby(["width", "height"]):
            w, h = size
            origins.setdefault(origin, []).append(f"{n * w}x{n * h}")
            names = list(same["image"])
            for m in range(len(names) // n ** 2):
                mosaic, rows = np.zeros((n * h, n * w, 3), np.uint8), []
                for k, name in enumerate(names[n ** 2 * m:n ** 2 * (m + 1)]):
                    x0, y0 = (k % n) * w, (k // n) * h
                    mosaic[y0:y0 + h, x0:x0 + w] = cv2.imread(str(canonical.root / "images" / split / name))
                    label = canonical.root / "labels" / split / f"{Path(name).stem}.txt"
                    for line in label.read_text().splitlines() if label.is_file() else []:
                        cls, cx, cy, bw, bh = line.split()[:5]
                        rows.append(f"{cls} {(x0 + float(cx) * w) / (n * w):.6f} {(y0 + float(cy) * h) / (n * h):.6f} "
                                    f"{float(bw) / n:.6f} {float(bh) / n:.6f}")
                stem = f"{origin}_{w}x{h}_{m:03d}"
                cv2.imwrite(str(out / "images" / split / f"{stem}.png"), mosaic)
                (out / "labels" / split / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
    spec = canonical.spec
    data = {"name": f"{spec.name}_mosaics", "path": str(out), "format": "yolo", split: f"images/{split}",
            "names": list(spec.names), "wbc_classes": list(spec.wbc_classes or []), "origins": origins}
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_split_arguments(p)
    p.add_argument("--class-map", help="yaml 'model class: dataset class or null' (e.g. data/class_maps/pbc_to_txl.yaml)")
    p.add_argument("--grid", type=int, default=2, help="fields per mosaic side")
    p.add_argument("--tile", type=int, help="predict.py's --tile (default: its own)")
    p.add_argument("--overlap", type=int, help="predict.py's --overlap (default: its own)")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "tiled_fields")
    canonical = prepare(args.data)
    mosaics = prepare(write_mosaics(canonical, args.split, out / "data", args.grid), need=(args.split,))
    class_map = yaml.safe_load(Path(args.class_map).read_text()) if args.class_map else None
    tiling = {"tile": args.tile, "overlap": args.overlap}
    result, tables = {}, []
    for key, dataset in (("fields", canonical), ("mosaics", mosaics)):
        summary, cells_json, fields = predict_split(dataset, args.split, out / key, args.weights, **tiling, **predict_switches(args))
        gt, origins = coco.ground_truth(dataset, args.split), dict(zip(fields["image"], fields["origin"]))
        result[key] = {**score_cells(cells_json, gt, class_map, origins), "fields": len(fields), "tiled": summary["tiled"]}
        tables.append(f"## {key}: {len(fields)}, {summary['tiled']} tiled\n\n"
                      + origin_table({**result[key]["per_origin"], "all": {"images": len(fields), **result[key]["pooled"]}}))
    result["settings"] = vars(args)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    (out / "summary.md").write_text(f"# {args.weights} on {args.data} {args.split}: fields and {args.grid} x {args.grid} mosaics, through predict.py\n\n"
                                    + "\n\n".join(tables) + "\n")
    print("\n\n".join(tables))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
