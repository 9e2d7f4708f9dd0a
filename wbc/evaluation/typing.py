"""WBC typing by the detector's classes against typing by a type head, on the same detections.

A type head (``wbc.attributes.train --types``) predicts the attribute :data:`CELL_TYPE` of every
WBC-type cell from the detector's features of the same pass. Both ways are scored on one run of
the analyzer, so they share the boxes and differ only in who names the type:

- per cell: every ground-truth WBC box with a known type, matched one-to-one (IoU, any class) to a
  cell; a cell the detector calls a red cell or platelet has no type from either;
- per field (single-WBC fields such as PBC's): the type of the highest-confidence WBC-type cell.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from wbc.attributes.data import CELL_TYPE
from wbc.evaluation.cells import SplitCells
from wbc.inference import Cell
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


Typer = Callable[[Cell], str]


def default_typers(attribute: str = CELL_TYPE) -> dict[str, Typer]:
    """Who names a cell's type: the detector (its class) and the type head (its ``attribute``)."""
    return {"detector": lambda c: c.class_name, "head": lambda c: c.attributes.get(attribute, (NONE, 0.0))[0]}


def matched_types(cells: SplitCells, truth: pd.Series, match_iou: float = 0.5, typers: dict[str, Typer] | None = None) -> pd.DataFrame:
    """One row per typed ground-truth box: image, truth (set of classes), then each typer's type of the
    matched cell ('' if none matched); default typers: detector and head (:func:`default_typers`)."""
    typers = typers or default_typers()
    by_truth = {p.truth: p for p in cells.matches(match_iou, class_aware=False)}
    rows = []
    for i, accepted in truth.items():
        image = cells.truth.at[i, "image"]
        p = by_truth.get(i)
        cell = cells.cells[image][p.cell] if p else None
        rows.append({"image": image, "truth": accepted, **{who: typer(cell) if cell else NONE for who, typer in typers.items()}})
    return pd.DataFrame(rows, columns=["image", "truth", *typers])


def top_cell_types(cells: SplitCells, wbc_classes: list[str], typers: dict[str, Typer] | None = None) -> dict[str, dict[str, str]]:
    """Per typer (default: detector and head), per field the type of its highest-confidence WBC-type cell."""
    typers = typers or default_typers()
    wbc, found = set(wbc_classes), {who: {} for who in typers}
    for image, cells_of in cells.cells.items():
        typed = [c for c in cells_of if c.class_name in wbc]
        if typed:
            top = max(typed, key=lambda c: c.confidence)
            for who, typer in typers.items():
                found[who][image] = typer(top)
    return found


def accuracy(table: pd.DataFrame, column: str, groups: dict[str, list[str]] | None = None) -> float:
    """Share of rows whose ``column`` type is among the truth's classes; with ``groups``, a type
    counts as right when it is in the same group as an accepted class."""
    if table.empty:
        return float("nan")
    label = {c: g for g, members in (groups or {}).items() for c in members}
    right = [label.get(p, p) in {label.get(t, t) for t in accepted} for p, accepted in zip(table[column], table["truth"])]
    return sum(right) / len(right)


def fused_probabilities(detector_scores: np.ndarray, head_probabilities: np.ndarray, weight: float) -> np.ndarray:
    """The fused type distribution (:func:`wbc.type_fusion.fused_log_probabilities`) of (K, T) detector
    scores of the typed classes and (K, T) head probabilities; ``weight``: the head's share."""
    import torch

    from wbc.type_fusion import fused_log_probabilities

    return fused_log_probabilities(torch.as_tensor(np.asarray(detector_scores)), torch.as_tensor(np.asarray(head_probabilities)),
                                   weight).exp().numpy()


def fused_type(cell: Cell, class_index: list[int], types: list[str], weight: float, attribute: str = CELL_TYPE) -> str:
    """The fused type of a cell analysed with ``keep_evidence`` and a type head ('' without both opinions)."""
    evidence = cell.evidence or {}
    head = evidence.get("attributes", {}).get(attribute)
    if head is None or "scores" not in evidence:
        return NONE
    p = fused_probabilities(np.asarray(evidence["scores"])[None, class_index], np.asarray(head)[None], weight)
    return types[int(p.argmax())]
