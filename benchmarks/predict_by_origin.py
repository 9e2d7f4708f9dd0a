"""Detection AP per origin of a split, scored on what ``predict.py`` writes, exactly as a user runs it.

    .venv/bin/python benchmarks/predict_by_origin.py --data data/txl_pbc.yaml --class-map data/class_maps/pbc_to_txl.yaml --name txl_val

``test.py`` scores the validator's predictions at confidence 0.001; a lab sees ``predict.py``'s cells
(its ``--conf``, rescaling and tiling), so this runs :func:`wbc.predict.predict` on the split's
images and scores its ``cells.json`` with COCOeval, per origin and pooled. A cell's confidence is its
score; cells of classes the class map drops are left out. Writes ``runs/predict_ap/<name>/``
(``metrics.json``, ``summary.md``, and the predict run under ``predict/``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from wbc.canonical import prepare  # noqa: E402
from wbc.evaluation import coco  # noqa: E402
from wbc.evaluation.audit import apply_audit, read_audit  # noqa: E402
from wbc.evaluation.report import origin_table  # noqa: E402
from wbc.evaluation.through_predict import add_split_arguments, predict_split, predict_switches, score_cells  # noqa: E402
from wbc.paths import REPO_ROOT, new_run_dir  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_split_arguments(p)
    p.add_argument("--class-map", help="yaml 'model class: dataset class or null' (e.g. data/class_maps/pbc_to_txl.yaml)")
    p.add_argument("--conf", type=float, default=0.25, help="predict.py's --conf (its default)")
    p.add_argument("--pixel-size", type=float)
    p.add_argument("--no-rescale", action="store_true")
    p.add_argument("--audit", help="label audit CSV (e.g. data/audits/txl_pbc_val_wbc.csv): also score on the corrected labels")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    canonical = prepare(args.data)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "predict_ap")
    summary, cells_json, fields = predict_split(canonical, args.split, out, args.weights, conf=args.conf, pixel_size=args.pixel_size,
                                                rescale=not args.no_rescale, **predict_switches(args))
    class_map = yaml.safe_load(Path(args.class_map).read_text()) if args.class_map else None
    gt, origins = coco.ground_truth(canonical, args.split), dict(zip(fields["image"], fields["origin"]))
    result = score_cells(cells_json, gt, class_map, origins)
    summary_md = f"# {args.weights} on {args.data} {args.split}, through predict.py (conf {args.conf})\n\n"
    tables = [origin_table({**result["per_origin"], "all": {"images": len(fields), **result["pooled"]}})]
    if args.audit:
        corrected, counts = apply_audit(gt, read_audit(args.audit), args.audit)
        result["audited"] = {"audit": args.audit, "corrections": counts, **score_cells(cells_json, corrected, class_map, origins)}
        tables.append(f"On the audited labels ({args.audit}: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + "):\n\n"
                      + origin_table({**result["audited"]["per_origin"], "all": {"images": len(fields), **result["audited"]["pooled"]}}))
    result["settings"] = {**vars(args), "predict_seconds": summary["seconds"], "rescaled": summary["rescaled"], "tiled": summary["tiled"]}
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    (out / "summary.md").write_text(summary_md + "\n\n".join(tables) + "\n")
    print("\n\n".join(tables))
    print(f"{summary['rescaled']} fields resized, {summary['tiled']} tiled; predict {summary['seconds']:.0f} s; written to {out}")


if __name__ == "__main__":
    main()
