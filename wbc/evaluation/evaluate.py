"""Evaluate a detector, and its attribute head where it has one, on a split of a dataset.

    python test.py --weights weights/wbc_multisource_yolov5n_352.pt --data data/pbc_wbcatt.yaml --split val

Writes ``runs/test/<name>/``:
    metrics.json             everything below, machine-readable
    summary.md               the tables
    attributes.csv           one row per ground-truth box (with its matched cell) and per unmatched cell
    test.csv                 AttriDet's layout (``--attridet-csv``)
    coco_ground_truth.json   the split's boxes in COCO form, and the validator's detections:
    coco_detections.json     the inputs of the COCOeval numbers, to re-check them elsewhere
    PR_curve.png, confusion_matrix*.png, ...   the ultralytics validator's plots
    class_confusion.png      true vs predicted class of the cells in attributes.csv
    attribute_confusion/<attribute>.png, field_confusion.png

Detection metrics come from the ultralytics validator at conf 0.001 (the full PR curve mAP needs) and
from pycocotools' COCOeval on the same predictions. Everything per cell (the CSV, attribute scores,
precision and recall at the operating point) uses the cells at ``--conf``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from wbc.arguments import FRACTION, IMGSZ, PIXEL_SIZE, POSITIVE_INT, Range
from wbc.canonical import CanonicalDataset, prepare
from wbc.class_map import load_class_map, require_same_classes
from wbc.errors import DatasetError, UsageError
from wbc.evaluation import coco
from wbc.classify.cell_classifier import CellClassifier
from wbc.evaluation.cells import attribute_metrics, attridet_table, call_counts, cell_table, class_confusion, collect, operating_point
from wbc.evaluation.detection import validate
from wbc.evaluation.plots import confusion_counts, plot_confusion
from wbc.evaluation.report import (agreement_line, attribute_section, call_section, detection_table, field_section, operating_point_table,
                                   origin_table, summary)
from wbc.evaluation.typing import top_cell_types
from wbc.field_accuracy import NO_WBC, field_accuracy, field_accuracy_of_predictions, grouped_accuracy, has_field_classes
from wbc.inference import WBCAnalyzer
from wbc.paths import DEFAULT_WEIGHTS, new_run_dir, runs_root


def scored_attributes(analyzer: WBCAnalyzer, canonical: CanonicalDataset, log=print) -> list[dict]:
    """The head's attributes that the dataset declares too (same values in the same order): those are
    scored. The others are only predicted (written to the CSV)."""
    declared = {a.name: list(a.values) for a in canonical.spec.used_attributes}
    scored = []
    for s in analyzer.attribute_specs:
        if s["name"] not in declared:
            continue
        if list(s["values"]) != declared[s["name"]]:
            raise UsageError(f"attribute '{s['name']}': the head's values {s['values']} differ from {canonical.spec.yaml_path}'s {declared[s['name']]}")
        scored.append(s)
    unscored = [s["name"] for s in analyzer.attribute_specs if s not in scored]
    if unscored:
        log(f"not scored (the dataset does not declare them; predictions are in attributes.csv): {', '.join(unscored)}")
    return scored


def agreement(ultralytics: dict, cocoeval: dict) -> dict:
    diffs = {name: max(abs(m["mAP50"] - cocoeval["per_class"][name]["mAP50"]), abs(m["mAP50-95"] - cocoeval["per_class"][name]["mAP50-95"]))
             for name, m in ultralytics["per_class"].items() if name in cocoeval["per_class"]}
    worst = max(diffs, key=diffs.get) if diffs else ""
    return {"mAP50": abs(ultralytics["mAP50"] - cocoeval["mAP50"]), "mAP50-95": abs(ultralytics["mAP50-95"] - cocoeval["mAP50-95"]),
            "max_per_class": diffs.get(worst, float("nan")), "max_per_class_name": worst}


def evaluate(weights: str | Path, data: str, out: Path, split: str = "val", imgsz: int | None = None, batch: int = 16,
             conf: float = 0.25, iou: float = 0.7, match_iou: float = 0.5, head: str | Path | bool | None = None,
             device: str = "cpu", data_root: str | None = None, attridet_csv: bool = False, plots: bool = True,
             class_map: str | Path | None = None, cell_classifier: str | Path | None = None, log=print,
             pixel_size: float | None = None, rescale: bool = True, field_groups: dict[str, list[str]] | None = None,
             colour: bool = True, types: str | Path | bool | None = None, some_type: bool = True) -> dict:
    """Evaluate and write everything to ``out`` (created). Returns the content of metrics.json. ``class_map``:
    a yaml mapping the model's classes to the dataset's, for a model trained on other classes."""
    start = time.time()
    canonical = prepare(data, data_root, need=())  # a test-only dataset can be scored: only the split asked for must be there
    if split not in canonical.splits:
        why = f"{canonical.left_out[split]} not found" if split in canonical.left_out else f"present: {', '.join(canonical.splits)}"
        raise DatasetError(canonical.spec.yaml_path, f"no split '{split}' ({why})")
    analyzer = WBCAnalyzer(weights, head, imgsz, conf, iou, device,
                           cell_classifier=CellClassifier.from_yaml(cell_classifier, device) if cell_classifier else None,
                           rescale=rescale, pixel_size=pixel_size, colour=colour, types=types, some_type=some_type)
    names = canonical.spec.names
    if class_map:
        analyzer.map_classes(load_class_map(class_map, list(analyzer.names.values()), names))
    else:
        require_same_classes(list(analyzer.names.values()), names, data)
    scored = scored_attributes(analyzer, canonical, log)
    if attridet_csv and not scored:
        raise UsageError("--attridet-csv needs an attribute head predicting attributes the dataset declares")
    out.mkdir(parents=True, exist_ok=True)
    settings = {"weights": str(weights), "head": str(analyzer.head_path) if analyzer.head else None, "data": str(data), "split": split,
                "imgsz": analyzer.imgsz, "batch": batch, "conf": conf, "iou": iou, "match_iou": match_iou, "device": device,
                "class_map": str(class_map) if class_map else None, "cell_classifier": str(cell_classifier) if cell_classifier else None,
                "pixel_size": pixel_size, "rescale": bool(analyzer.gain), "colour_normalised": analyzer.colour_reference is not None,
                "type_head": str(analyzer.type_head_path) if analyzer.type_head else None, "type_head_share": analyzer.type_share}
    result = {"settings": settings}
    predictions, factors = _detection(result, analyzer, weights, canonical, split, batch, iou, device, out, plots, log)
    if has_field_classes(canonical, split):
        _field_types(result, predictions, canonical, split, out, plots, log, field_groups)
    _cells(result, analyzer, scored, canonical, split, batch, match_iou, out, plots, attridet_csv, log, factors, field_groups)
    result["wall_seconds"] = time.time() - start
    (out / "metrics.json").write_text(json.dumps(_finite(result), indent=2))
    (out / "summary.md").write_text(summary(result))
    return result


def _detection(result: dict, analyzer: WBCAnalyzer, weights, canonical: CanonicalDataset, split: str, batch: int, iou: float,
               device: str, out: Path, plots: bool, log) -> tuple[list[dict], dict[str, float] | None]:
    """Validator metrics and COCOeval on its predictions into ``result``; returns the predictions and
    each field's resize to the training scale (None: fields run as they come)."""
    imgsz, class_map = analyzer.imgsz, analyzer.class_map
    factors = _field_scales(result, analyzer, canonical, split, log) if analyzer.gain else None
    if factors:  # the validator letterboxes to one size: that of nearly the largest resized field at the training gain
        import numpy as np

        fields = canonical.fields()
        fields = fields[fields["split"] == split]
        sides = [max(w, h) * factors[n] * analyzer.gain for n, w, h in zip(fields["image"], fields["width"], fields["height"])]
        large = float(np.percentile(sides, 95))  # not the largest: one outlier estimate would make every batch that big
        imgsz = max(imgsz, -(-round(large) // analyzer.stride) * analyzer.stride)
    ultralytics, predictions = validate(weights, canonical, split, imgsz, batch, iou, device, out, plots, class_map, factors,
                                        analyzer.gain or 1.0, analyzer.colour_reference)
    gt = coco.ground_truth(canonical, split)
    dets = coco.detections(predictions, gt)
    (out / "coco_ground_truth.json").write_text(json.dumps(gt))
    (out / "coco_detections.json").write_text(json.dumps(dets))
    cocoeval = coco.evaluate(gt, dets)
    result["images"] = len(gt["images"])
    result["detection"] = {"ultralytics": ultralytics, "cocoeval": cocoeval, "agreement": agreement(ultralytics, cocoeval)}
    log(detection_table(result["detection"]) + "\n" + agreement_line(result["detection"]["agreement"]))
    fields = canonical.fields()
    fields = fields[fields["split"] == split]
    if fields["origin"].nunique() > 1:  # every number per source too, never only pooled
        result["detection"]["per_origin"] = coco.by_origin(gt, dets, dict(zip(fields["image"], fields["origin"])))
        log(origin_table(result["detection"]["per_origin"]))
    return predictions, factors


def _field_scales(result: dict, analyzer: WBCAnalyzer, canonical: CanonicalDataset, split: str, log) -> dict[str, float]:
    """Each field's resize to the training scale, as the analyzer finds it (file name -> factor);
    the median red-cell diameter and factor per origin go into ``result``."""
    import numpy as np

    from wbc.evaluation.cells import read_field
    from wbc.rescale import SCALE_GROUP

    fields = canonical.fields()
    fields = fields[fields["split"] == split]
    names = sorted(fields["image"])
    scales = {}
    for start in range(0, len(names), SCALE_GROUP):  # pooled as predict.py pools them
        chunk = names[start:start + SCALE_GROUP]
        scales.update(zip(chunk, analyzer.field_scales([read_field(canonical.root / "images" / split / n) for n in chunk])))
    per_origin = {}
    for origin, names in fields.groupby("origin")["image"]:
        found = [scales[n] for n in names if scales[n].rbc_diameter_px]
        per_origin[origin] = {"fields": len(names), "without_estimate": len(names) - len(found),
                              "median_rbc_diameter_px": float(np.median([s.rbc_diameter_px for s in found])) if found else None,
                              "median_factor": float(np.median([s.factor for s in found])) if found else None}
    result["scale"] = {"train_rbc_diameter_px": analyzer.reference_rbc_px, "pixel_size_um": analyzer.pixel_size, "per_origin": per_origin}
    log("Resized to the training scale (red cells " + f"{analyzer.reference_rbc_px:.1f} px): " + ", ".join(
        f"{o} x{m['median_factor']:.2f}" if m["median_factor"] else f"{o} (no estimate)" for o, m in per_origin.items()))
    return {name: s.factor for name, s in scales.items()}


def _field_types(result: dict, predictions: list[dict], canonical: CanonicalDataset, split: str, out: Path, plots: bool, log,
                 groups: dict[str, list[str]] | None = None) -> None:
    """WBC type per single-WBC field, from the validator's predictions (conf 0.001: every field gets its best guess);
    with ``groups``, also with the classes of each group counted as one."""
    field = result["field_accuracy"] = field_accuracy_of_predictions(canonical, split, predictions)
    if groups:
        field["grouped"] = {"groups": groups, "accuracy": grouped_accuracy(field["confusion"], groups)}
        merged = ", ".join(f"{g} = {'+'.join(m)}" for g, m in groups.items())
        log(f"WBC type per field with {merged}: {field['grouped']['accuracy'] * 100:.2f}%")
    if plots:
        truth = [t for t, row in field["confusion"].items() for _, n in row.items() for _ in range(n)]
        guess = [p for row in field["confusion"].values() for p, n in row.items() for _ in range(n)]
        plot_confusion(*confusion_counts(truth, guess, [*canonical.spec.wbc_classes, NO_WBC]), f"WBC type per field ({split})",
                       out / "field_confusion.png")
    log(field_section(field))


def _cells(result: dict, analyzer: WBCAnalyzer, specs: list[dict], canonical: CanonicalDataset, split: str, batch: int, match_iou: float,
           out: Path, plots: bool, attridet_csv: bool, log, factors: dict[str, float] | None = None,
           field_groups: dict[str, list[str]] | None = None) -> None:
    """The analyzer's cells at its confidence: operating point, attributes.csv, scores of the attributes
    in ``specs``, on single-WBC fields the type per field as predict.py types (the analyzer's
    highest-confidence WBC-type cell: with a type head, the fused type), and plots."""
    from ultralytics.utils import TQDM

    names = canonical.spec.names
    analyzer.keep_evidence = analyzer.keep_evidence or analyzer.review is not None
    cells = collect(analyzer, canonical, split, batch, progress=lambda it, n: TQDM(it, total=n, desc=f"cells ({split})"), factors=factors)
    agnostic, aware = cells.matches(match_iou, class_aware=False), cells.matches(match_iou, class_aware=True)
    if analyzer.review is not None:
        _review(result, analyzer, cells, canonical, match_iou, out, plots, log)
    if has_field_classes(canonical, split):
        typed = top_cell_types(cells, list(canonical.spec.wbc_classes), {"analyzer": lambda c: c.class_name})["analyzer"]
        field = result["field_accuracy_cells"] = field_accuracy(canonical, split, typed)
        if field_groups:
            field["grouped"] = {"groups": field_groups, "accuracy": grouped_accuracy(field["confusion"], field_groups)}
        log(f"WBC type per field as predict.py types (cells at conf >= {analyzer.conf}): {field['accuracy'] * 100:.2f}%"
            + (f", grouped {field['grouped']['accuracy'] * 100:.2f}%" if field_groups else ""))
    result["operating_point"] = operating_point(cells, aware, names)
    log(operating_point_table(result["operating_point"], analyzer.conf, match_iou))
    truth_specs = [{"name": a.name, "values": list(a.values)} for a in canonical.spec.used_attributes]
    call = analyzer.cell_classifier.name if analyzer.cell_classifier else None
    table = cell_table(cells, agnostic, truth_specs, [s["name"] for s in analyzer.attribute_specs], call)
    table.to_csv(out / "attributes.csv", index=False)
    if call:
        result["calls"] = {"name": call, "classes": list(analyzer.cell_classifier.classes), "counts": call_counts(table, call)}
        log(call_section(result["calls"]))
    if plots:
        plot_confusion(*class_confusion(cells, agnostic, names), f"cells at conf >= {analyzer.conf}, IoU >= {match_iou} ({split})",
                       out / "class_confusion.png")
    if not specs:
        return
    result["attributes"] = {mode: attribute_metrics(cells, pairs, specs) for mode, pairs in (("class_agnostic", agnostic), ("class_aware", aware))}
    log(attribute_section(result["attributes"], match_iou))
    if attridet_csv:
        attridet_table(table, specs).to_csv(out / "test.csv", index=False)
    if plots:
        (out / "attribute_confusion").mkdir(exist_ok=True)
        matched = table[(table["gt_class"] != "") & (table["pred_class"] != "")]
        for s in specs:
            known = matched[matched[s["name"]].isin(s["values"])]
            if len(known):
                plot_confusion(*confusion_counts(list(known[s["name"]]), list(known[f"pred_{s['name']}"]), s["values"]),
                               f"{s['name']} ({split}, matched boxes)", out / "attribute_confusion" / f"{s['name']}.png")


def _review(result: dict, analyzer: WBCAnalyzer, cells, canonical: CanonicalDataset, match_iou: float, out: Path, plots: bool, log) -> None:
    """The review decision on the split's true WBC-type cells: share flagged per origin at the analyzer's
    operating point, type and attribute ECE before / after calibration, reliability diagrams."""
    from wbc.review.fit import report, review_table, write_report
    from wbc.review.gather import evidence_of

    try:
        evidence = evidence_of(cells, canonical, analyzer, match_iou)
    except ValueError as e:
        log(f"review decision not scored: {e}")
        return
    review = report(analyzer.review, evidence, analyzer.operating_point, canonical.spec.label_sets)
    if plots:
        review = write_report(out / "review", review)
    else:
        for o in review["per_origin"].values():
            o.get("type", {}).pop("curves", None)
    result["review"] = review
    log(review_table(review))


def parse_groups(specs: list[str] | None) -> dict[str, list[str]] | None:

    """['NE=BNE,SNE', ...] -> {'NE': ['BNE', 'SNE'], ...}."""
    if not specs:
        return None
    groups = {}
    for spec in specs:
        name, sep, members = spec.partition("=")
        if not sep or not name or not members:
            raise UsageError(f"--field-groups: {spec!r} is not GROUP=CLASS,CLASS")
        groups[name] = members.split(",")
    return groups


def _finite(x):
    """NaN -> None, so that metrics.json is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="detector checkpoint (default: the shipped model); its attribute head "
                   "<stem>.attributes.pt beside it is used when present")
    p.add_argument("--head", help="attribute head file, if not beside the weights")
    p.add_argument("--no-head", action="store_true", help="evaluate detection only")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--data-root", help="dataset root overriding the yaml's path")
    p.add_argument("--split", default="val", help="val or test (or any split the yaml declares)")
    p.add_argument("--imgsz", type=IMGSZ, help="default: the attribute head's, else the detector's training size")
    p.add_argument("--batch", type=POSITIVE_INT, default=16)
    p.add_argument("--conf", type=FRACTION, default=0.25, help="confidence of the cells in the CSV and attribute scores (mAP always uses 0.001)")
    p.add_argument("--iou", type=FRACTION, default=0.7, help="NMS IoU")
    p.add_argument("--match-iou", type=Range(float, 0, 1, lo_open=True), default=0.5, help="IoU at which a cell matches a ground-truth box")
    p.add_argument("--class-map", help="yaml mapping the model's classes to the dataset's ('model class: dataset class or null'), "
                   "for a model trained on other classes, e.g. data/class_maps/pbc_to_bccd.yaml")
    p.add_argument("--cell-classifier", help="yaml naming detector classes and a crop classifier to call on them "
                   "(e.g. lymphocyte-like cells -> reactive / normal); its label and probability go into attributes.csv")
    p.add_argument("--pixel-size", type=PIXEL_SIZE, help="µm per pixel of the fields (default: estimated per field from its red cells); "
                   "fields are resized to the scale the model was trained on, as predict.py does")
    p.add_argument("--no-rescale", action="store_true", help="evaluate every field at the size it comes")
    p.add_argument("--no-colour-norm", action="store_true", help="evaluate every field in its own colours (no normalisation to the "
                   "training fields' colours, which predict.py does where the model card records them)")
    p.add_argument("--max-type-score", action="store_true", help="score a WBC box by its best type alone, not by the probability "
                   "that it is some WBC type (predict.py --max-type-score)")
    p.add_argument("--types", help="type head file, if not beside the weights (<stem>.types.pt)")
    p.add_argument("--no-type-head", action="store_true", help="type by the detector's classes alone, not with the type head beside the weights")
    p.add_argument("--field-groups", nargs="+", metavar="GROUP=A,B", help="also score the WBC type per field with classes grouped, "
                   "e.g. NE=BNE,SNE IG=MMY,MY,PMY (PBC's published 8-group scheme)")
    p.add_argument("--attridet-csv", action="store_true", help="also write AttriDet's test.csv layout")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu, 0 or cuda:0")
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="write into runs/test/<name> even if it exists")
    args = p.parse_args(argv)
    out = new_run_dir(args.name, runs_root() / "test", args.exist_ok)
    result = evaluate(args.weights, args.data, out, args.split, args.imgsz, args.batch, args.conf, args.iou, args.match_iou,
                      False if args.no_head else args.head, args.device, args.data_root, args.attridet_csv, not args.no_plots,
                      args.class_map, args.cell_classifier, pixel_size=args.pixel_size, rescale=not args.no_rescale,
                      field_groups=parse_groups(args.field_groups), colour=not args.no_colour_norm,
                      types=False if args.no_type_head else args.types, some_type=not args.max_type_score)
    print(f"{result['images']} images in {result['wall_seconds']:.0f} s; written to {out}")
