"""The differential count: WBC types per 100 WBC, per smear and per run, with cells the detector is
unsure of put in an "unidentified" bin for review instead of being counted as a guess, and
nucleated red cells reported per 100 WBC outside the 100."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from wbc.inference import Cell

UNIDENTIFIED = "unidentified"


def review_reason(cell: Cell, wbc_classes: set[str], review_conf: float) -> str:
    """Why a WBC-type cell goes to UNIDENTIFIED ('' when it does not, and for other cells). Where the
    model has a review model (:mod:`wbc.review`) its decision stands: a calibrated type probability
    below, or an out-of-distribution score above, the stored operating point. Without one, a
    detection confidence below ``review_conf``."""
    if cell.class_name not in wbc_classes:
        return ""
    if cell.type_probability is not None:
        return cell.review
    return f"confidence below {review_conf}" if cell.confidence < review_conf else ""


def review_bin(cell: Cell, wbc_classes: set[str], review_conf: float) -> str:
    """The bin a cell is counted in: its class, or UNIDENTIFIED (:func:`review_reason`)."""
    return UNIDENTIFIED if review_reason(cell, wbc_classes, review_conf) else cell.class_name


def count(cells: list[Cell], wbc_classes: list[str], review_conf: float, nrbc_classes: Sequence[str] = ()) -> dict:
    """{'wbc': n, 'per_class': {bin: {'count', 'percent'}} over WBC types and UNIDENTIFIED,
    'nrbc': {class: {'count', 'per_100_wbc'}} for nucleated red cells (``nrbc_classes``, typed like WBC but
    outside the n, as a differential reports them), 'other': {class: n} for the rest (RBC, platelets)}.
    A cell of ``wbc_classes`` or ``nrbc_classes`` flagged for review (:func:`review_reason`) is UNIDENTIFIED and counts among the n."""

    nrbc = list(nrbc_classes)
    wbc = [c for c in wbc_classes if c not in nrbc]
    typed = {*wbc, *nrbc}
    bins = Counter(review_bin(c, typed, review_conf) for c in cells)
    n = sum(bins.get(k, 0) for k in [*wbc, UNIDENTIFIED])
    per_class = {k: {"count": bins.get(k, 0), "percent": 100 * bins.get(k, 0) / n if n else 0.0} for k in [*wbc, UNIDENTIFIED]}
    nrbc_counts = {k: {"count": bins.get(k, 0), "per_100_wbc": 100 * bins.get(k, 0) / n if n else 0.0} for k in nrbc}
    return {"wbc": n, "per_class": per_class, "nrbc": nrbc_counts,
            "other": {k: v for k, v in sorted(bins.items()) if k not in typed and k != UNIDENTIFIED}}


def differential(cells_by_image: dict[str, list[Cell]], wbc_classes: list[str], review_conf: float,
                 nrbc_classes: Sequence[str] = ()) -> dict:
    """Per smear (image) and over the whole run."""
    everything = [c for cells in cells_by_image.values() for c in cells]
    return {"review_conf": review_conf, "run": count(everything, wbc_classes, review_conf, nrbc_classes),
            "per_image": {name: count(cells, wbc_classes, review_conf, nrbc_classes) for name, cells in cells_by_image.items()}}


def differential_table(counts: dict) -> str:
    """Markdown: count and % of WBC per bin (bins that occur), the total, nucleated red cells per 100 WBC, other cells."""
    rows = [f"| {k} | {v['count']} | {v['percent']:.1f} |" for k, v in counts["per_class"].items() if v["count"]]
    lines = ["| class | count | % of WBC |", "|---|---|---|", *rows, f"| **WBC** | **{counts['wbc']}** | 100 |"]
    nrbc = [f"{k} {v['count']} ({v['per_100_wbc']:.1f} per 100 WBC)" for k, v in counts["nrbc"].items() if v["count"]]
    if nrbc:
        lines.append("\nnucleated red cells, outside the differential: " + ", ".join(nrbc))
    if counts["other"]:
        lines.append("\nother cells: " + ", ".join(f"{k} {v}" for k, v in counts["other"].items()))
    return "\n".join(lines)
