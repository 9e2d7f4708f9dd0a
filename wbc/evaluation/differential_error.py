"""How far the differential count is from the truth: per class, the absolute error in percentage
points of WBC, per field (then averaged over fields) and pooled over the run.

Two readings of the "unidentified" bin: counted as an error (its cells stay in the denominator and
belong to no class, as a lab sees the count before review), or left out (the count over identified
cells only, as if review had removed them)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from wbc.differential import UNIDENTIFIED


def truth_per_field(truth_boxes, wbc_classes: list[str], type_of=None) -> tuple[dict[str, list[str]], int]:
    """({image: WBC types of its boxes}, fields left out). ``truth_boxes``: canonical box rows of a split;
    ``type_of``: row -> its type, or None where unknown (default: the box class); a field with a WBC
    of unknown type is left out, since its true differential is not known."""
    out, skipped = {}, 0
    for image, rows in truth_boxes.groupby("image", sort=True):
        rows = rows[rows["class"].isin(wbc_classes)]
        types = [type_of(r) if type_of else r["class"] for _, r in rows.iterrows()]
        if None in types:
            skipped += 1
        elif types:
            out[image] = types
    return out, skipped


def predicted_per_field(cells_json: Path, wbc_classes: list[str], groups: dict[str, str] | None = None) -> dict[str, list[str]]:
    """{image: bin of each WBC-type cell} from predict.py's cells.json; ``groups``: class -> the truth's name for it."""
    groups, wbc = groups or {}, set(wbc_classes)
    return {f["image"]: [c["bin"] if c["bin"] == UNIDENTIFIED else groups.get(c["bin"], c["bin"]) for c in f["cells"] if c["class"] in wbc]
            for f in json.loads(Path(cells_json).read_text())}


def percentages(bins: list[str], classes: list[str], count_unidentified: bool) -> dict[str, float]:
    counts = Counter(bins)
    n = sum(v for k, v in counts.items() if count_unidentified or k != UNIDENTIFIED)
    return {c: 100 * counts.get(c, 0) / n if n else 0.0 for c in classes}


def differential_error(truth: dict[str, list[str]], predicted: dict[str, list[str]], classes: list[str]) -> dict:
    """Per class and averaged over classes: mean absolute error per field, and the error of the pooled
    count, with and without the unidentified bin counted as an error; plus the unidentified share."""
    fields = sorted(truth)
    pooled_truth = [t for f in fields for t in truth[f]]
    pooled_pred = [p for f in fields for p in predicted.get(f, [])]
    out = {"fields": len(fields), "truth_cells": len(pooled_truth), "predicted_cells": len(pooled_pred),
           "unidentified_share": pooled_pred.count(UNIDENTIFIED) / len(pooled_pred) if pooled_pred else 0.0}
    for mode, counted in (("unidentified_as_error", True), ("identified_only", False)):
        per_field = {c: 0.0 for c in classes}
        for f in fields:
            t, p = percentages(truth[f], classes, True), percentages(predicted.get(f, []), classes, counted)
            for c in classes:
                per_field[c] += abs(p[c] - t[c]) / len(fields)
        t, p = percentages(pooled_truth, classes, True), percentages(pooled_pred, classes, counted)
        pooled = {c: abs(p[c] - t[c]) for c in classes}
        out[mode] = {"per_field": per_field, "per_field_mean": sum(per_field.values()) / len(classes),
                     "pooled": pooled, "pooled_mean": sum(pooled.values()) / len(classes),
                     "pooled_percent": {"truth": t, "predicted": p}}
    return out


def error_table(result: dict) -> str:
    a, b = result["unidentified_as_error"], result["identified_only"]
    lines = ["| class | truth % (pooled) | predicted % | per-field MAE, unidentified as error | identified only | pooled error, unidentified as error | identified only |",
             "|---|---|---|---|---|---|---|"]
    for c in a["per_field"]:
        lines.append(f"| {c} | {a['pooled_percent']['truth'][c]:.1f} | {a['pooled_percent']['predicted'][c]:.1f} | "
                     f"{a['per_field'][c]:.2f} | {b['per_field'][c]:.2f} | {a['pooled'][c]:.2f} | {b['pooled'][c]:.2f} |")
    lines.append(f"| **mean** | | | **{a['per_field_mean']:.2f}** | **{b['per_field_mean']:.2f}** | **{a['pooled_mean']:.2f}** | "
                 f"**{b['pooled_mean']:.2f}** |")
    return "\n".join(lines) + (f"\n\n{result['fields']} fields, {result['truth_cells']} true WBC, {result['predicted_cells']} WBC-type "
                               f"cells found, {100 * result['unidentified_share']:.1f}% of them unidentified.")
