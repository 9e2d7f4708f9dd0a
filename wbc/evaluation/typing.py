"""WBC typing by the detector's classes against typing by a type head, on the same detections.

A type head (``wbc.attributes.train --types``) predicts the attribute :data:`CELL_TYPE` of every
WBC-type cell from the detector's features of the same pass. Both ways are scored on one run of
the analyzer, so they share the boxes and differ only in who names the type:

- per cell: every ground-truth WBC box with a known type, matched one-to-one (IoU, any class) to a
  cell; a cell the detector calls a red cell or platelet has no type from either;
- per field (single-WBC fields such as PBC's): the type of the highest-confidence WBC-type cell.
"""

from __future__ import annotations

import pandas as pd

from wbc.attributes.data import CELL_TYPE
from wbc.evaluation.cells import SplitCells
from wbc.schema import Attribute

NONE = ""  # no type: the cell is not a WBC type, or no cell matched


def truth_types(cells: SplitCells, wbc_classes: list[str], attribute: Attribute | None = None,
                members: dict[str, list[str]] | None = None) -> pd.Series:
    """Each ground-truth box's true type as a set of acceptable model classes (index: truth row):
    its class where it is a WBC type; with ``attribute`` (e.g. BCCD's ``wbc_subtype``), the classes
    ``members`` maps that attribute's value to (a list: a neutrophil may be band or segmented).
    Boxes of unknown type are left out."""
    truth = cells.truth
    if attribute is None:
        typed = truth[truth["class"].isin(wbc_classes)]
        return pd.Series({i: frozenset([c]) for i, c in typed["class"].items()}, dtype=object)
    if attribute.name not in truth:
        raise ValueError(f"the split's boxes carry no attribute {attribute.name!r}")
    unmapped = sorted(set(attribute.values) - set(members or {}))
    if unmapped:
        raise ValueError(f"attribute {attribute.name!r}: no model classes given for {', '.join(unmapped)}")
    known = {i: frozenset(members[attribute.values[code]]) for i, code in truth[attribute.name].items() if code >= 0}
    return pd.Series(known, dtype=object)


def matched_types(cells: SplitCells, truth: pd.Series, match_iou: float = 0.5, attribute: str = CELL_TYPE) -> pd.DataFrame:
    """One row per typed ground-truth box: image, truth (set of classes), detector and head type ('' if none)."""
    by_truth = {p.truth: p for p in cells.matches(match_iou, class_aware=False)}
    rows = []
    for i, accepted in truth.items():
        image = cells.truth.at[i, "image"]
        p = by_truth.get(i)
        cell = cells.cells[image][p.cell] if p else None
        head = cell.attributes.get(attribute, (NONE, 0.0))[0] if cell else NONE
        rows.append({"image": image, "truth": accepted, "detector": cell.class_name if cell else NONE, "head": head})
    return pd.DataFrame(rows, columns=["image", "truth", "detector", "head"])


def top_cell_types(cells: SplitCells, wbc_classes: list[str], attribute: str = CELL_TYPE) -> tuple[dict[str, str], dict[str, str]]:
    """Per field, the type of its highest-confidence WBC-type cell: ({image: detector class}, {image: head type})."""
    wbc, detector, head = set(wbc_classes), {}, {}
    for image, found in cells.cells.items():
        typed = [c for c in found if c.class_name in wbc]
        if typed:
            top = max(typed, key=lambda c: c.confidence)
            detector[image] = top.class_name
            head[image] = top.attributes.get(attribute, (NONE, 0.0))[0]
    return detector, head


def accuracy(table: pd.DataFrame, column: str, groups: dict[str, list[str]] | None = None) -> float:
    """Share of rows whose ``column`` type is among the truth's classes; with ``groups``, a type
    counts as right when it is in the same group as an accepted class."""
    if table.empty:
        return float("nan")
    label = {c: g for g, members in (groups or {}).items() for c in members}
    right = [label.get(p, p) in {label.get(t, t) for t in accepted} for p, accepted in zip(table[column], table["truth"])]
    return sum(right) / len(right)
