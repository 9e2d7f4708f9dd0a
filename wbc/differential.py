"""The differential count: WBC types per 100 WBC, per smear and per run, with cells the detector is
unsure of put in an "unidentified" bin for review instead of being counted as a guess."""

from __future__ import annotations

from collections import Counter

from wbc.inference import Cell

UNIDENTIFIED = "unidentified"


def review_bin(cell: Cell, wbc_classes: set[str], review_conf: float) -> str:
    """The bin a cell is counted in: its class, UNIDENTIFIED for a WBC-type cell below ``review_conf``."""
    return UNIDENTIFIED if cell.class_name in wbc_classes and cell.confidence < review_conf else cell.class_name


def count(cells: list[Cell], wbc_classes: list[str], review_conf: float) -> dict:
    """{'wbc': n, 'per_class': {bin: {'count', 'percent'}} over WBC types and UNIDENTIFIED,
    'other': {class: n} for cells that are not WBC types (RBC, platelets)}."""
    wbc = set(wbc_classes)
    bins = Counter(review_bin(c, wbc, review_conf) for c in cells)
    n = sum(v for k, v in bins.items() if k in wbc or k == UNIDENTIFIED)
    per_class = {k: {"count": bins.get(k, 0), "percent": 100 * bins.get(k, 0) / n if n else 0.0} for k in [*wbc_classes, UNIDENTIFIED]}
    return {"wbc": n, "per_class": per_class, "other": {k: v for k, v in sorted(bins.items()) if k not in wbc and k != UNIDENTIFIED}}


def differential(cells_by_image: dict[str, list[Cell]], wbc_classes: list[str], review_conf: float) -> dict:
    """Per smear (image) and over the whole run."""
    return {"review_conf": review_conf, "run": count([c for cells in cells_by_image.values() for c in cells], wbc_classes, review_conf),
            "per_image": {name: count(cells, wbc_classes, review_conf) for name, cells in cells_by_image.items()}}


def differential_table(counts: dict) -> str:
    """Markdown: count and % of WBC per bin (bins that occur), then the total and the other cells."""
    rows = [f"| {k} | {v['count']} | {v['percent']:.1f} |" for k, v in counts["per_class"].items() if v["count"]]
    lines = ["| class | count | % of WBC |", "|---|---|---|", *rows, f"| **WBC** | **{counts['wbc']}** | 100 |"]
    if counts["other"]:
        lines.append("\nother cells: " + ", ".join(f"{k} {v}" for k, v in counts["other"].items()))
    return "\n".join(lines)
