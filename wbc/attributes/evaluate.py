"""Attribute accuracy from predicted boxes: every ground-truth box with a known attribute value is
matched one-to-one to a predicted WBC-type box at IoU >= ``match_iou``; matched pairs are scored,
unmatched ground-truth boxes are counted as misses.

    .venv/bin/python -m wbc.attributes.evaluate --weights W --data data/pbc_wbcatt.yaml --split val
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import cv2
import numpy as np

from wbc.attributes.metrics import match_boxes, summarize_attributes
from wbc.canonical import CanonicalDataset, prepare
from wbc.inference import Cell, WBCAnalyzer
from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir


@dataclass
class Match:
    """A ground-truth box with known attributes and the predicted cell matched to it."""

    image: str
    truth: np.ndarray  # (A,) codes of the dataset's attributes, in the order asked for
    cell: Cell
    iou: float


def match_detections(analyzer: WBCAnalyzer, canonical: CanonicalDataset, names: list[str], split: str = "val",
                     match_iou: float = 0.5, batch: int = 16) -> tuple[list[Match], int]:
    """Every ground-truth box with a known value of ``names``, matched one-to-one to a predicted WBC-type
    cell at IoU >= ``match_iou``. Returns (matches, number of such ground-truth boxes)."""
    table = canonical.attributes()
    table = table[(table["split"] == split) & (table[names] >= 0).any(axis=1)]
    wbc = set(canonical.spec.wbc_classes)
    groups = list(table.groupby("image", sort=True))
    matches = []
    for start in range(0, len(groups), batch):
        chunk = groups[start:start + batch]
        images = [cv2.imread(str(canonical.root / "images" / split / name)) for name, _ in chunk]
        for (name, rows), cells in zip(chunk, analyzer(images)):
            cells = [c for c in cells if c.class_name in wbc]
            gt = rows[["x1", "y1", "x2", "y2"]].to_numpy(float)
            for g, p, iou in match_boxes(gt, np.array([c.box for c in cells]).reshape(-1, 4), match_iou):
                matches.append(Match(name, rows[names].to_numpy()[g], cells[p], iou))
    return matches, len(table)


def score_matches(matches: list[Match], ground_truth_boxes: int, specs: list[dict], predicted: np.ndarray, split: str, match_iou: float) -> dict:
    """Attribute scores of matched boxes; ``predicted``: (len(matches), A) value indices."""
    truth = np.array([m.truth for m in matches]).reshape(-1, len(specs))
    scores = summarize_attributes([s["name"] for s in specs], [len(s["values"]) for s in specs], truth, predicted.reshape(-1, len(specs)))
    return {"split": split, "match_iou": match_iou, "ground_truth_boxes": ground_truth_boxes, "matched": len(matches),
            "unmatched_ground_truth": ground_truth_boxes - len(matches),
            "mean_matched_iou": float(np.mean([m.iou for m in matches])) if matches else float("nan"), **scores}


def head_predictions(matches: list[Match], specs: list[dict]) -> np.ndarray:
    """(len(matches), A) value indices the attribute head gave each matched cell."""
    return np.array([[s["values"].index(m.cell.attributes[s["name"]][0]) for s in specs] for m in matches])


def evaluate_on_detections(analyzer: WBCAnalyzer, canonical: CanonicalDataset, split: str = "val",
                           match_iou: float = 0.5, batch: int = 16) -> dict:
    if analyzer.head is None:
        raise ValueError("the checkpoint has no attribute head")
    spec = canonical.spec
    specs = analyzer.attribute_specs
    names = [s["name"] for s in specs]
    missing = [n for n in names if n not in [a.name for a in spec.attributes]]
    if missing:
        raise ValueError(f"the head predicts {missing}, which {spec.name} does not declare")
    matches, n_truth = match_detections(analyzer, canonical, names, split, match_iou, batch)
    return score_matches(matches, n_truth, specs, head_predictions(matches, specs), split, match_iou)


def format_scores(result: dict) -> str:
    lines = [f"{'attribute':<28} {'known':>6} {'accuracy':>9} {'macro-F1':>9}"]
    for name, s in result["per_attribute"].items():
        lines.append(f"{name:<28} {s['known']:>6} {s['accuracy'] * 100:>8.2f}% {s['macro_f1'] * 100:>9.2f}")
    lines.append(f"{'mean':<28} {'':>6} {result['mean_accuracy'] * 100:>8.2f}% {result['mean_macro_f1'] * 100:>9.2f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="detector checkpoint (default: the shipped model); its head is <stem>.attributes.pt beside it")
    p.add_argument("--head", help="attribute head file, if not beside the weights")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--split", default="val")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--match-iou", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    analyzer = WBCAnalyzer(args.weights, args.head, args.imgsz, conf=args.conf, device=args.device)
    result = evaluate_on_detections(analyzer, prepare(args.data), args.split, args.match_iou)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "attributes_eval")
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    print(f"{args.split}: {result['ground_truth_boxes']} ground-truth boxes with attributes, {result['matched']} matched at "
          f"IoU >= {args.match_iou} (mean IoU {result['mean_matched_iou']:.3f}), {result['unmatched_ground_truth']} missed")
    print(format_scores(result))
    print(f"written to {out / 'metrics.json'}")


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
