"""Run ``predict.py``'s own code on the fields of a dataset split, as a user runs it, for benchmarks
that score what a lab sees (``benchmarks/predict_by_origin.py``, ``benchmarks/differential_error.py``)."""

from __future__ import annotations

import json
from pathlib import Path

from wbc.canonical import CanonicalDataset
from wbc.evaluation import coco
from wbc.predict import predict


def add_split_arguments(parser) -> None:
    """The arguments every such benchmark takes: --data, --split, --weights, and predict.py's switches
    --no-colour-norm and --max-type-score (pass ``**predict_switches(args)`` to :func:`predict_split`)."""
    from wbc.paths import DEFAULT_WEIGHTS

    parser.add_argument("--data", required=True, help="dataset yaml")
    parser.add_argument("--split", default="val")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--no-colour-norm", action="store_true", help="fields in their own colours (predict.py --no-colour-norm)")
    parser.add_argument("--max-type-score", action="store_true", help="a WBC box scored by its best type alone (predict.py --max-type-score)")


def predict_switches(args) -> dict:
    """The predict.py switches of :func:`add_split_arguments`, as keyword arguments of :func:`predict_split`."""
    return {"colour": not args.no_colour_norm, "some_type": not args.max_type_score}


def predict_split(canonical: CanonicalDataset, split: str, out: Path, weights, origin: str | None = None,
                  **predict_args) -> tuple[dict, Path, "object"]:
    """(predict's summary, its cells.json, the split's fields table sorted by image); predict writes under
    ``out / 'predict'``. ``origin``: only the fields of this origin."""
    fields = canonical.fields()
    fields = fields[(fields["split"] == split) & ((fields["origin"] == origin) if origin else True)].sort_values("image")
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "images.txt"
    listing.write_text("".join(f"{canonical.root / 'images' / split / n}\n" for n in fields["image"]))
    summary = predict(listing, out / "predict", weights=weights, annotated=False, report=False, log=lambda *a: None, **predict_args)
    return summary, out / "predict" / "cells.json", fields


def score_cells(cells_json: Path, gt: dict, class_map: dict[str, str | None] | None, origins: dict[str, str]) -> dict:
    """COCOeval of a cells.json against a COCO ground truth, pooled and per origin (a cell's score: its confidence;
    ``class_map``: model class -> dataset class, or None to drop it)."""
    names = {c["name"]: c["id"] for c in gt["categories"]}
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    dets = []
    for field in json.loads(cells_json.read_text()):
        for c in field["cells"]:
            name = class_map.get(c["class"]) if class_map else c["class"]
            if name is None:
                continue
            x1, y1, x2, y2 = c["x1"], c["y1"], c["x2"], c["y2"]
            dets.append({"image_id": ids[field["image"]], "category_id": names[name], "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": c["confidence"]})
    return {"pooled": coco.evaluate(gt, dets), "per_origin": coco.by_origin(gt, dets, origins)}
