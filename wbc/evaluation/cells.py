"""Per-cell evaluation: the analyzer's cells on every field of a split, matched one-to-one to the
ground-truth boxes, and everything computed from those pairs (the per-cell table, attribute
scores, counts at the operating confidence).

Matching is greedy by IoU (:func:`wbc.attributes.metrics.match_boxes`): pairs below ``match_iou``
are never matched, each box is used once. Class-aware matching only pairs boxes of the same class;
class-agnostic matching pairs any classes, which is what shows misclassified cells. Results do not
depend on the batch size: every field is letterboxed to the same square input on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import pandas as pd

from wbc.attributes.metrics import match_boxes, summarize_attributes
from wbc.canonical import CanonicalDataset
from wbc.errors import DatasetError
from wbc.inference import Cell, WBCAnalyzer
from wbc.schema import NOT_APPLICABLE, UNKNOWN

UNKNOWN_LABEL, NOT_APPLICABLE_LABEL = "(unknown)", "(n/a)"
BOX = ["x1", "y1", "x2", "y2"]


@dataclass(frozen=True)
class Pair:
    """A ground-truth box (row of :attr:`SplitCells.truth`) and the cell matched to it."""

    image: str
    truth: int
    cell: int  # index into cells[image]
    iou: float


@dataclass
class SplitCells:
    """Every ground-truth box of a split and the analyzer's cells on each of its fields."""

    split: str
    truth: pd.DataFrame  # canonical box rows of the split (every class), index 0..N-1
    cells: dict[str, list[Cell]]  # image -> cells, in the analyzer's order (confidence descending)

    def matches(self, match_iou: float = 0.5, class_aware: bool = False) -> list[Pair]:
        pairs = []
        for image, rows in self.truth.groupby("image", sort=True):
            cells = self.cells.get(image, [])
            for g, p, iou in match_field(rows[BOX].to_numpy(float), list(rows["class"]), cells, match_iou, class_aware):
                pairs.append(Pair(image, int(rows.index[g]), p, iou))
        return pairs


def read_field(path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise DatasetError(path, "not a readable image")
    return image


def predict_fields(analyzer: WBCAnalyzer, canonical: CanonicalDataset, split: str, images: list[str],
                   batch: int = 16, factors: dict[str, float] | None = None) -> Iterator[tuple[str, list[Cell]]]:
    """(image name, cells) for each of ``images`` of ``split``, ``batch`` fields per detector pass.
    ``factors``: each field's resize to the training scale (None: the analyzer finds them)."""
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        yield from zip(chunk, analyzer([read_field(canonical.root / "images" / split / name) for name in chunk],
                                       [factors[n] for n in chunk] if factors else None))


def collect(analyzer: WBCAnalyzer, canonical: CanonicalDataset, split: str, batch: int = 16, progress=None,
            factors: dict[str, float] | None = None) -> SplitCells:
    """Run the analyzer on every field of ``split``. ``progress``: optional wrapper of the iterator (e.g. a progress bar)."""
    fields = canonical.fields()
    images = sorted(fields.loc[fields["split"] == split, "image"])
    if not images:
        raise DatasetError(canonical.spec.yaml_path, f"split '{split}' has no images")
    truth = canonical.attributes()
    truth = truth[truth["split"] == split].reset_index(drop=True)
    results = predict_fields(analyzer, canonical, split, images, batch, factors)
    return SplitCells(split, truth, dict(progress(results, len(images)) if progress else results))


def match_field(gt: np.ndarray, gt_classes: list[str], cells: list[Cell], match_iou: float, class_aware: bool) -> list[tuple[int, int, float]]:
    """Greedy one-to-one (truth index, cell index, IoU) pairs of one field."""
    pred = np.array([c.box for c in cells], float).reshape(-1, 4)
    if not class_aware:
        return match_boxes(gt, pred, match_iou)
    pairs = []
    for cls in sorted(set(gt_classes)):
        g_idx = [i for i, c in enumerate(gt_classes) if c == cls]
        p_idx = [i for i, c in enumerate(cells) if c.class_name == cls]
        pairs += [(g_idx[g], p_idx[p], iou) for g, p, iou in match_boxes(gt[g_idx], pred[p_idx], match_iou)]
    return sorted(pairs)


def value_label(spec: dict, code: int) -> str:
    return UNKNOWN_LABEL if code == UNKNOWN else NOT_APPLICABLE_LABEL if code == NOT_APPLICABLE else spec["values"][code]


def cell_table(result: SplitCells, pairs: list[Pair], truth_specs: list[dict], predicted: list[str], call: str | None = None) -> pd.DataFrame:
    """One row per ground-truth box (with its matched cell, if any) and per unmatched cell: image,
    truth class and box, predicted class, confidence and box, IoU, then per attribute its true value
    (``truth_specs``: the dataset's attributes as {name, values}) and its predicted value and
    probability (``predicted``: names of the attributes the cells carry); with ``call`` (the cell
    classifier's name), its label and probability where the cell has one."""
    by_truth = {p.truth: p for p in pairs}
    matched_cells = {(p.image, p.cell) for p in pairs}
    specs = {s["name"]: s for s in truth_specs}
    names = list(specs) + [n for n in predicted if n not in specs]
    rows = []

    def row(image: str, truth: pd.Series | None, cell: Cell | None, iou: float | None) -> dict:
        r = {"image": image,
             "gt_box": "" if truth is None else int(truth["box"]), "gt_class": "" if truth is None else truth["class"],
             **{f"gt_{k}": "" if truth is None else float(truth[k]) for k in BOX},
             "pred_class": "" if cell is None else cell.class_name, "confidence": "" if cell is None else round(cell.confidence, 4),
             **({f"pred_{k}": round(v, 2) for k, v in zip(BOX, cell.box)} if cell else {f"pred_{k}": "" for k in BOX}),
             "iou": "" if iou is None else round(iou, 4)}
        for name in names:
            if name in specs:
                r[name] = "" if truth is None else value_label(specs[name], int(truth[name]))
            if name in predicted:
                value, probability = cell.attributes.get(name, ("", "")) if cell else ("", "")
                r[f"pred_{name}"] = value
                r[f"prob_{name}"] = round(probability, 4) if value else ""
        if call:
            label, probability = cell.call if cell and cell.call else ("", "")
            r[call], r[f"{call}_probability"] = label, round(probability, 4) if label else ""
        return r

    for image, truth in result.truth.groupby("image", sort=True):
        cells = result.cells.get(image, [])
        for i, t in truth.iterrows():
            p = by_truth.get(i)
            rows.append(row(image, t, cells[p.cell] if p else None, p.iou if p else None))
    for image in sorted(result.cells):
        for j, cell in enumerate(result.cells[image]):
            if (image, j) not in matched_cells:
                rows.append(row(image, None, cell, None))
    return pd.DataFrame(rows)


def attridet_table(table: pd.DataFrame, specs: list[dict]) -> pd.DataFrame:
    """AttriDet's ``test.csv`` layout: ``filename``, the true value index of each attribute, then
    ``pred_<attribute>``; one row per matched ground-truth box with at least one known value."""
    names = [s["name"] for s in specs]
    rows = table[(table["gt_class"] != "") & (table["pred_class"] != "")]
    rows = rows[rows[names].apply(lambda r: any(v in s["values"] for v, s in zip(r, specs)), axis=1)] if len(rows) else rows
    out = pd.DataFrame({"filename": rows["image"]})
    for s in specs:
        out[s["name"]] = [s["values"].index(v) if v in s["values"] else -1 for v in rows[s["name"]]]
    for s in specs:
        out[f"pred_{s['name']}"] = [s["values"].index(v) if v in s["values"] else -1 for v in rows[f"pred_{s['name']}"]]
    return out.reset_index(drop=True)


def head_values(result: SplitCells, pairs: list[Pair], specs: list[dict]) -> np.ndarray:
    """(len(pairs), A) value indices the attribute head gave each matched cell."""
    def index(cell: Cell, spec: dict) -> int:  # -1: the cell carries no value (its class is not one the head describes)
        value = cell.attributes.get(spec["name"])
        return spec["values"].index(value[0]) if value else -1

    return np.array([[index(result.cells[p.image][p.cell], s) for s in specs] for p in pairs], int).reshape(-1, len(specs))


def attribute_metrics(result: SplitCells, pairs: list[Pair], specs: list[dict], predicted: np.ndarray | None = None) -> dict:
    """Scores of the matched boxes per attribute (known true values only), plus per attribute the
    number of ground-truth boxes with a known value that no cell matched (``missed``).
    ``predicted``: (len(pairs), A) value indices from another model; default: the cells' own."""
    names = [s["name"] for s in specs]
    codes = result.truth[names].to_numpy(int)
    truth = codes[[p.truth for p in pairs]].reshape(-1, len(specs))
    predicted = head_values(result, pairs, specs) if predicted is None else np.asarray(predicted).reshape(-1, len(specs))
    scores = summarize_attributes(names, [len(s["values"]) for s in specs], truth, predicted)
    unmatched = np.ones(len(codes), bool)
    unmatched[[p.truth for p in pairs]] = False
    for a, (name, spec) in enumerate(zip(names, specs)):
        per = scores["per_attribute"][name]
        per["missed"] = int((codes[unmatched, a] >= 0).sum())
        per["per_value"] = dict(zip(spec["values"], per["per_value"]))
    known = (codes >= 0).any(axis=1)
    return {"ground_truth_boxes_with_attributes": int(known.sum()), "matched": int(known[[p.truth for p in pairs]].sum()),
            "missed": int((known & unmatched).sum()),
            "mean_matched_iou": float(np.mean([p.iou for p in pairs if known[p.truth]])) if len(pairs) else float("nan"), **scores}


def operating_point(result: SplitCells, aware: list[Pair], names: list[str]) -> dict:
    """Per class at the analyzer's confidence, from class-aware matching: ground-truth boxes, true
    positives, false positives (unmatched cells of the class), misses, precision and recall."""
    gt = result.truth["class"].value_counts()
    predicted = pd.Series([c.class_name for cells in result.cells.values() for c in cells]).value_counts()
    tp = pd.Series([result.truth.at[p.truth, "class"] for p in aware]).value_counts()
    per_class = {}
    for name in names:
        n_gt, n_pred, n_tp = int(gt.get(name, 0)), int(predicted.get(name, 0)), int(tp.get(name, 0))
        if n_gt or n_pred:
            per_class[name] = {"ground_truth": n_gt, "predicted": n_pred, "tp": n_tp, "fp": n_pred - n_tp, "fn": n_gt - n_tp,
                               "precision": n_tp / n_pred if n_pred else float("nan"), "recall": n_tp / n_gt if n_gt else float("nan")}
    n_tp, n_gt, n_pred = len(aware), len(result.truth), int(predicted.sum())
    return {"ground_truth": n_gt, "predicted": n_pred, "tp": n_tp, "precision": n_tp / n_pred if n_pred else float("nan"),
            "recall": n_tp / n_gt if n_gt else float("nan"), "per_class": per_class}


def class_confusion(result: SplitCells, agnostic: list[Pair], names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Counts of (true class or 'background') x (predicted class or 'missed') from class-agnostic matching."""
    rows, cols = [*names, "background"], [*names, "missed"]
    m = np.zeros((len(rows), len(cols)), int)
    matched = {p.truth: result.cells[p.image][p.cell].class_name for p in agnostic}
    for i, cls in enumerate(result.truth["class"]):
        m[rows.index(cls), cols.index(matched.get(i, "missed"))] += 1
    used = {(p.image, p.cell) for p in agnostic}
    for image, cells in result.cells.items():
        for j, c in enumerate(cells):
            if (image, j) not in used:
                m[-1, cols.index(c.class_name)] += 1
    return m, rows, cols


def call_counts(table: pd.DataFrame, call: str) -> dict:
    """{true class (or 'background' for an unmatched cell): {call: n}} over the cells that have a call."""
    called = table[table[call] != ""]
    truth = called["gt_class"].where(called["gt_class"] != "", "background")
    return {t: dict(sorted(g[call].value_counts().items())) for t, g in called.groupby(truth, sort=True)}
