"""The tables of an evaluation, as text for the terminal and as ``summary.md``."""

from __future__ import annotations


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def detection_table(metrics: dict) -> str:
    ul, coco = metrics["ultralytics"], metrics["cocoeval"]
    rows = []
    for name, m in ul["per_class"].items():
        c = coco["per_class"].get(name, {})
        rows.append([name, m["instances"], f"{m['P']:.3f}", f"{m['R']:.3f}", f"{m['mAP50']:.3f}", f"{m['mAP50-95']:.3f}",
                     f"{c.get('mAP50', float('nan')):.3f}", f"{c.get('mAP50-95', float('nan')):.3f}", f"{c.get('AR', float('nan')):.3f}"])
    rows.append(["**all**", ul["instances"], f"{ul['P']:.3f}", f"{ul['R']:.3f}", f"**{ul['mAP50']:.3f}**", f"**{ul['mAP50-95']:.3f}**",
                 f"**{coco['mAP50']:.3f}**", f"**{coco['mAP50-95']:.3f}**", f"{coco['AR']:.3f}"])
    return markdown_table(["class", "instances", "P", "R", "mAP50", "mAP50-95", "COCOeval mAP50", "COCOeval mAP50-95", "COCOeval AR"], rows)


def origin_table(per_origin: dict) -> str:
    """COCOeval AP50 per class and origin (rows), mAP50 and mAP50-95 of each origin's fields."""
    classes = list(dict.fromkeys(c for m in per_origin.values() for c in m["per_class"]))
    rows = [[origin, m["images"], *(f"{m['per_class'][c]['mAP50']:.3f}" if c in m["per_class"] else "—" for c in classes),
             f"{m['mAP50']:.3f}", f"{m['mAP50-95']:.3f}"] for origin, m in per_origin.items()]
    return "Per origin (COCOeval):\n\n" + markdown_table(["origin", "images", *(f"{c} AP50" for c in classes), "mAP50", "mAP50-95"], rows)


def agreement_line(agreement: dict) -> str:
    return (f"COCOeval vs ultralytics: |Δ mAP50| {agreement['mAP50']:.4f}, |Δ mAP50-95| {agreement['mAP50-95']:.4f}, "
            f"largest per-class |Δ| {agreement['max_per_class']:.4f} ({agreement['max_per_class_name']})")


def operating_point_table(op: dict, conf: float, match_iou: float) -> str:
    rows = [[name, m["ground_truth"], m["predicted"], m["tp"], m["fp"], m["fn"], f"{m['precision']:.3f}", f"{m['recall']:.3f}"]
            for name, m in op["per_class"].items()]
    rows.append(["**all**", op["ground_truth"], op["predicted"], op["tp"], op["predicted"] - op["tp"], op["ground_truth"] - op["tp"],
                 f"{op['precision']:.3f}", f"{op['recall']:.3f}"])
    return (f"At confidence >= {conf}, class-aware one-to-one matching at IoU >= {match_iou}:\n\n"
            + markdown_table(["class", "truth", "predicted", "TP", "FP", "FN", "precision", "recall"], rows))


def attribute_table(scores: dict) -> str:
    rows = []
    for name, s in scores["per_attribute"].items():
        rows.append([name, s["known"], s["unknown"], s["not_applicable"], s["missed"], _pct(s["accuracy"]), f"{s['macro_f1'] * 100:.2f}"])
    rows.append(["**mean**", "", "", "", "", f"**{_pct(scores['mean_accuracy'])}**", f"**{scores['mean_macro_f1'] * 100:.2f}**"])
    return markdown_table(["attribute", "known", "unknown", "n/a", "missed", "accuracy", "macro-F1"], rows)


def attribute_section(attributes: dict, match_iou: float) -> str:
    parts = []
    for mode in ("class_agnostic", "class_aware"):
        s = attributes[mode]
        parts.append(f"**{mode.replace('_', '-')} matching** at IoU >= {match_iou}: {s['matched']} of "
                     f"{s['ground_truth_boxes_with_attributes']} ground-truth boxes with a known attribute matched "
                     f"(mean IoU {s['mean_matched_iou']:.3f}), {s['missed']} missed.\n\n" + attribute_table(s))
    return "\n\n".join(parts)


def field_section(field: dict) -> str:
    rows = [[c, f"{r:.3f}", ", ".join(f"{p} {n}" for p, n in field["confusion"][c].items())] for c, r in field["recall_per_class"].items()]
    return (f"WBC type per field ({field['fields']} fields; the highest-confidence WBC-type box vs the field's class): "
            f"accuracy **{_pct(field['accuracy'])}**, {field['no_wbc_detected']} fields without any WBC detection"
            + (f"; with {', '.join(f'{g} = ' + '+'.join(m) for g, m in field['grouped']['groups'].items())} counted as one, "
               f"**{_pct(field['grouped']['accuracy'])}**" if "grouped" in field else "") + ".\n\n"
            + markdown_table(["class", "recall", "predicted as"], rows))


def call_section(calls: dict) -> str:
    labels = sorted({c for row in calls["counts"].values() for c in row})
    rows = [[t, *(row.get(c, 0) for c in labels)] for t, row in calls["counts"].items()]
    return (f"Cell classifier '{calls['name']}' on cells detected as {', '.join(calls['classes'])} (rows: true class of the matched "
            "ground-truth box, class-agnostic; 'background': no box):\n\n" + markdown_table(["true class", *labels], rows))


def summary(result: dict) -> str:
    """``summary.md`` of an evaluation result (see :func:`wbc.evaluation.evaluate.evaluate`)."""
    a = result["settings"]
    lines = [f"# Evaluation of `{a['weights']}` on `{a['data']}` {a['split']}", "",
             f"{result['images']} images, {a['imgsz']} px, NMS IoU {a['iou']}, attribute head: "
             f"{'`' + a['head'] + '`' if a['head'] else 'none'}; wall time {result['wall_seconds']:.0f} s.", "",
             "## Detection (validator at conf 0.001)", "", detection_table(result["detection"]), "",
             agreement_line(result["detection"]["agreement"]), "",
             *([origin_table(result["detection"]["per_origin"]), ""] if "per_origin" in result["detection"] else []),
             "## Cells at the operating point", "", operating_point_table(result["operating_point"], a["conf"], a["match_iou"])]
    if "field_accuracy" in result:
        lines += ["", "## WBC type per field", "", "The validator's boxes (conf 0.001, the detector's classes):", "",
                  field_section(result["field_accuracy"])]
    if "field_accuracy_cells" in result:
        lines += ["", f"As predict.py types: the analyzer's cells at conf >= {a['conf']}"
                  + (f", the type head weighing {a['type_head_share']:g}" if a.get("type_head") else "") + ":", "",
                  field_section(result["field_accuracy_cells"])]
    if "attributes" in result:
        lines += ["", "## Attributes of matched boxes", "", attribute_section(result["attributes"], a["match_iou"])]
    if "review" in result:
        from wbc.review.fit import review_table

        op = result["review"]["operating_point"]
        lines += ["", "## Review decision (true WBC-type cells)", "",
                  f"Unidentified: calibrated type probability < {op['min_type_probability']:.3f} or OOD score > {op['max_ood']:.3f} "
                  f"(flags {100 * op['review_rate']:.0f}% of the fit's val cells of known types); reliability diagrams in `review/`.", "",
                  review_table(result["review"])]
    if "calls" in result:

        lines += ["", "## Cell classifier", "", call_section(result["calls"])]
    lines += ["", "Files: `metrics.json`, `attributes.csv` (one row per ground-truth box and per unmatched prediction), "
              "plots (`confusion_matrix*.png`, `PR_curve.png`, `attribute_confusion/`, `field_confusion.png`).", ""]
    return "\n".join(lines)
