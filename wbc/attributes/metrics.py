"""Attribute metrics and the one-to-one matching of predicted to ground-truth boxes."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from wbc.schema import NOT_APPLICABLE, UNKNOWN


def match_boxes(gt: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching by IoU: pairs taken in decreasing IoU, each box used once,
    pairs below ``iou_threshold`` never matched. gt (N, 4), pred (M, 4) xyxy. Returns (gt, pred, iou)."""
    if len(gt) == 0 or len(pred) == 0:
        return []
    iou = box_iou(torch.tensor(np.asarray(gt), dtype=torch.float32), torch.tensor(np.asarray(pred), dtype=torch.float32)).numpy()
    pairs = sorted(((iou[i, j], i, j) for i, j in zip(*np.nonzero(iou >= iou_threshold))), reverse=True)
    used_gt, used_pred, matches = set(), set(), []
    for v, i, j in pairs:
        if i not in used_gt and j not in used_pred:
            used_gt.add(i), used_pred.add(j)
            matches.append((int(i), int(j), float(v)))
    return sorted(matches)


def attribute_scores(truth: np.ndarray, predicted: np.ndarray, n_values: int) -> dict:
    """Accuracy, per-value precision/recall/F1 and macro-F1 over boxes whose true value is known (code >= 0);
    boxes with unknown or not-applicable values are excluded and counted."""
    known = truth >= 0
    t, p = truth[known], predicted[known]
    result = {"known": int(known.sum()), "excluded": int((~known).sum()),
              "unknown": int((truth == UNKNOWN).sum()), "not_applicable": int((truth == NOT_APPLICABLE).sum())}
    if not len(t):
        return {**result, "accuracy": float("nan"), "macro_f1": float("nan"), "per_value": []}
    per_value, f1s = [], []
    for v in range(n_values):
        tp, fp, fn = int(((p == v) & (t == v)).sum()), int(((p == v) & (t != v)).sum()), int(((p != v) & (t == v)).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_value.append({"precision": precision, "recall": recall, "f1": f1, "support": int((t == v).sum())})
        if tp + fn:  # macro-F1 over the values present in the ground truth
            f1s.append(f1)
    return {**result, "accuracy": float((t == p).mean()), "macro_f1": float(np.mean(f1s)), "per_value": per_value}


def summarize_attributes(names: list[str], value_counts: list[int], truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Per-attribute scores for (K, A) code arrays, and their means."""
    per = {n: attribute_scores(truth[:, a], predicted[:, a], value_counts[a]) for a, n in enumerate(names)}
    valid = [s for s in per.values() if s["known"]]
    return {"per_attribute": per, "mean_accuracy": float(np.mean([s["accuracy"] for s in valid])) if valid else float("nan"),
            "mean_macro_f1": float(np.mean([s["macro_f1"] for s in valid])) if valid else float("nan")}
