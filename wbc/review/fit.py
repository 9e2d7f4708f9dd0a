"""Fit the review model of a detector (``python calibrate.py``): OOD statistics from the training
cells of every source, temperatures and the operating point from the val cells, both gathered by
running the analyzer as ``predict.py`` does (:mod:`wbc.review.gather`).

Writes ``<stem>.review.pt`` beside the weights, a ``review`` section into the model card's JSON, and
``runs/calibrate/<name>/``: metrics.json (ECE before / after per output head and per source, flag
rates per source at the operating point) and reliability diagrams."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from wbc.review.calibration import ece, fit_temperature, reliability_diagram
from wbc.review.decision import DEFAULT_PROBABILITY_SHARE, DEFAULT_REVIEW_RATE, OperatingPoint, flag_rate

from wbc.review.gather import SplitEvidence
from wbc.review.model import SCORES, ReviewModel
from wbc.review.scores import Mahalanobis, NearestNeighbours


# the OOD score and its statistics, chosen by benchmarks/unseen_types.py on PBC val (docs/review.md)
DEFAULT_OOD, DEFAULT_K, DEFAULT_SHRINKAGE = ("knn", "mahalanobis", "energy"), 30, 0.3


def typed_labels(evidence: SplitEvidence, type_classes: list[str]) -> np.ndarray:
    """Index in ``type_classes`` of each cell's true type; -1 where the truth is a label set (untyped WBC, BCCD's NEUTROPHIL)."""
    index = {c: i for i, c in enumerate(type_classes)}
    return np.array([index.get(t, -1) for t in evidence.cells["truth"]], int)


def origin_weights(origins) -> np.ndarray:
    """One over each origin's cell count: every source weighs the same in the operating point."""
    origins = np.asarray(origins)
    values, counts = np.unique(origins, return_counts=True)
    per = dict(zip(values, 1.0 / counts))
    return np.array([per[o] for o in origins])


def type_confidence(probabilities: np.ndarray, type_classes: list[str], truth: list[str],
                    label_sets: dict[str, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of each typed cell for the ECE. A cell whose truth is a label set other
    than the all-WBC one (BCCD's NEUTROPHIL = BNE or SNE) is scored in groups: the set's members pool
    their probability, and the prediction is right when the most probable group is the set."""
    confidence, correct = [], []
    for p, t in zip(probabilities, truth):
        if t in type_classes:
            confidence.append(p.max())
            correct.append(type_classes[int(p.argmax())] == t)
        else:
            members = [type_classes.index(c) for c in label_sets[t] if c in type_classes]
            grouped = np.array([p[members].sum(), *np.delete(p, members)])
            confidence.append(grouped.max())
            correct.append(grouped.argmax() == 0)
    return np.array(confidence), np.array(correct, float)


def typed_cells(evidence: SplitEvidence, type_classes: list[str], label_sets: dict[str, list[str]], all_wbc: str | None) -> np.ndarray:
    """Cells whose true type is known (a class, or a label set narrower than 'any WBC')."""
    return np.array([t in type_classes or (t in label_sets and t != all_wbc) for t in evidence.cells["truth"]])


def head_probabilities(model: ReviewModel, evidence: SplitEvidence) -> torch.Tensor | None:
    """The type head's probabilities of the cells where the model fuses them in, else None."""
    return torch.from_numpy(evidence.types) if model.head_share and evidence.types is not None else None


def fit_review(train: SplitEvidence, val: SplitEvidence, names: list[str], type_classes: list[str],
               label_sets: dict[str, list[str]] | None = None, ood: list[str] = DEFAULT_OOD,
               review_rate: float = DEFAULT_REVIEW_RATE, probability_share: float = DEFAULT_PROBABILITY_SHARE,
               k: int = DEFAULT_K, shrinkage: float = DEFAULT_SHRINKAGE, head_share: float = 0.0) -> tuple[ReviewModel, dict]:
    """The review model and its report. ``names``: the detector's classes; ``type_classes``: those typed;
    ``k``: neighbours of the kNN score; ``shrinkage``: of the Mahalanobis covariance; ``head_share``: the
    type head's share of the type distribution (the analyzer's, :mod:`wbc.type_fusion`; its evidence
    must then hold the head's probabilities)."""
    label_sets = label_sets or {}
    unknown = [s for s in ood if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown OOD score(s) {unknown}: choose from {SCORES}")
    model = ReviewModel(type_classes, [names.index(c) for c in type_classes], review_rate=review_rate, ood=list(ood),
                        probability_share=probability_share, head_share=head_share)
    if head_share and val.types is None:
        raise ValueError("a type head's share without its probabilities: gather the evidence with the type head")
    # OOD statistics: every true WBC-type training cell; its class is the truth where typed, else the detector's call
    labels = typed_labels(train, type_classes)
    predicted = np.array([type_classes.index(p) if p in type_classes else -1 for p in train.cells["predicted"]])
    labels = np.where(labels >= 0, labels, predicted)
    keep = labels >= 0
    features = torch.from_numpy(train.features[keep])
    model.knn = NearestNeighbours.fit(features, k)
    model.mahalanobis = Mahalanobis.fit(features, torch.from_numpy(labels[keep]), shrinkage)
    # the type temperature: val cells of one known type
    scores = torch.from_numpy(val.scores)
    val_labels = typed_labels(val, type_classes)
    single = val_labels >= 0
    types = head_probabilities(model, val)
    model.temperature = fit_temperature(model.type_log_probabilities(scores[single], None if types is None else types[single]),
                                        torch.from_numpy(val_labels[single]))
    for name, p in val.attributes.items():
        codes = val.truth_attributes[name].to_numpy() if name in val.truth_attributes else np.full(len(p), -1)
        known = (codes >= 0) & ~np.isnan(p).any(1)
        if known.any():
            model.attribute_temperatures[name] = fit_temperature(torch.from_numpy(np.log(np.clip(p[known], 1e-8, 1))),
                                                                 torch.from_numpy(codes[known]))
    # each score's spread on the val cells, then the operating point on their combined score
    raw = model.raw_scores(torch.from_numpy(val.features), scores)
    model.spread = {k: (float(v.median()), float(v.quantile(0.95) - v.median())) for k, v in raw.items()}
    p_type = model.type_probabilities(scores, head_probabilities=types).max(1).values.numpy()
    combined = model.combine(raw).numpy()
    weights = origin_weights(val.cells["origin"])
    model.known = {"type_probability": p_type, "ood": combined, "weight": weights}
    return model, report(model, val, model.operating_point(), label_sets)


def report(model: ReviewModel, val: SplitEvidence, op: OperatingPoint, label_sets: dict[str, list[str]] | None = None) -> dict:
    """On the true WBC-type cells of ``val``: type ECE before / after calibration per source (where
    their types are known), attribute ECE before / after, and the share of cells ``op`` flags per source."""
    label_sets = label_sets or {}
    all_wbc = max(label_sets, key=lambda k: len(label_sets[k])) if label_sets else None
    scores = torch.from_numpy(val.scores)
    raw = model.raw_scores(torch.from_numpy(val.features), scores)
    types = head_probabilities(model, val)
    before = model.type_probabilities(scores, calibrated=False, head_probabilities=types).numpy()
    after = model.type_probabilities(scores, head_probabilities=types).numpy()
    p_type, ood = after.max(1), model.combine(raw).numpy()
    typed = typed_cells(val, model.type_classes, label_sets, all_wbc)
    out = {"operating_point": op.as_dict(), "temperature": model.temperature, "attribute_temperatures": model.attribute_temperatures,
           "ood": model.ood, "head_share": model.head_share, "per_origin": {}}
    origins = val.cells["origin"].to_numpy()
    for origin in ["all", *sorted(set(origins))]:
        rows = np.ones(len(origins), bool) if origin == "all" else origins == origin
        if not rows.any():
            continue
        o = {"cells": int(rows.sum()),
             "flag_rate": flag_rate(op, p_type[rows], ood[rows]),
             "flag_rate_type_probability": float((p_type[rows] < op.min_type_probability).mean()),
             "flag_rate_ood": float((ood[rows] > op.max_ood).mean()),
             "median_scores": {k: float(v[torch.from_numpy(rows)].median()) for k, v in raw.items()}}
        t = rows & typed
        if t.any():
            truth = list(val.cells["truth"][t])
            cb, kb = type_confidence(before[t], model.type_classes, truth, label_sets)
            ca, ka = type_confidence(after[t], model.type_classes, truth, label_sets)
            o["type"] = {"typed_cells": int(t.sum()), "accuracy": float(ka.mean()), "ece_before": ece(cb, kb), "ece_after": ece(ca, ka),
                         "curves": {"before": (cb, kb), "after": (ca, ka)}}
        out["per_origin"][origin] = o
    out["attributes"] = {}
    for name, p in val.attributes.items():
        codes = val.truth_attributes[name].to_numpy() if name in val.truth_attributes else np.full(len(p), -1)
        known = (codes >= 0) & ~np.isnan(p).any(1)
        if not known.any():
            continue
        t = model.attribute_temperatures.get(name, 1.0)
        logp = np.log(np.clip(p[known], 1e-8, 1))
        calibrated = torch.from_numpy(logp / t).softmax(1).numpy()
        correct = (p[known].argmax(1) == codes[known]).astype(float)
        out["attributes"][name] = {"cells": int(known.sum()), "temperature": t, "ece_before": ece(p[known].max(1), correct),
                                   "ece_after": ece(calibrated.max(1), correct), "accuracy": float(correct.mean())}
    return out


def write_report(out: Path, result: dict) -> dict:
    """metrics.json and the reliability diagrams; returns the report without the curves."""
    out.mkdir(parents=True, exist_ok=True)
    for origin, o in result["per_origin"].items():
        if "type" in o:
            curves = o["type"].pop("curves")
            reliability_diagram(out / f"reliability_type_{origin}.png", curves, f"WBC type, val, {origin}")
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


REVIEW_HEADING = "## Review decision (calibrate.py)"


def card_section(result: dict, command: str) -> str:
    """The model card's section on the review model: temperatures, ECE, operating point, flag rates per source."""
    op = result["operating_point"]
    lines = [REVIEW_HEADING, "",
             f"`{command}`. A WBC-type cell goes to *unidentified* when its calibrated type probability is below "
             f"{op['min_type_probability']:.3f} or its OOD score ({' + '.join(result['ood'])}, scaled by its spread on val) is above "
             f"{op['max_ood']:.3f}: the operating point that flags {100 * op['review_rate']:.0f}% of val cells of known types "
             "(every source weighing the same). Type temperature "
             f"{result['temperature']:.3f}" + (f", on the type distribution of the detector and its type head together (the head "
                                               f"weighing {result['head_share']:g}, wbc/type_fusion.py)" if result.get("head_share") else "")
             + ".", "", review_table(result)]
    return "\n".join(lines)


def review_table(result: dict) -> str:
    """Per source: true WBC-type cells, the share flagged (and by which test), type accuracy and ECE
    before / after calibration where types are known; then per attribute its temperature and ECE."""
    lines = ["| source | cells | flagged | by probability | by OOD | typed cells | type accuracy | type ECE before | after |",
             "|---|---|---|---|---|---|---|---|---|"]
    for origin, o in result["per_origin"].items():

        t = o.get("type")
        typed = (f"{t['typed_cells']} | {100 * t['accuracy']:.1f}% | {100 * t['ece_before']:.1f}% | {100 * t['ece_after']:.1f}%"
                 if t else "0 | | | ")
        lines.append(f"| {origin} | {o['cells']} | {100 * o['flag_rate']:.1f}% | {100 * o['flag_rate_type_probability']:.1f}% | "
                     f"{100 * o['flag_rate_ood']:.1f}% | {typed} |")
    if result.get("attributes"):
        lines += ["", "| attribute | temperature | ECE before | after |", "|---|---|---|---|"]
        lines += [f"| {k} | {a['temperature']:.3f} | {100 * a['ece_before']:.1f}% | {100 * a['ece_after']:.1f}% |"
                  for k, a in result["attributes"].items()]
    return "\n".join(lines)


def update_card(weights: Path, result: dict, command: str) -> None:
    """Put the review section into the model card (``<stem>.md``, before its Limits, replacing an earlier
    one) and the operating point and temperatures into its JSON (key ``review``)."""
    md, js = weights.with_suffix(".md"), weights.with_suffix(".json")
    if js.is_file():
        card = json.loads(js.read_text())
        card["review"] = {k: result[k] for k in ("operating_point", "temperature", "attribute_temperatures", "ood", "head_share") if k in result}
        js.write_text(json.dumps(card, indent=2))
    if md.is_file():
        text = md.read_text()
        if REVIEW_HEADING in text:
            start = text.index(REVIEW_HEADING)
            end = text.find("\n## ", start + 1)
            text = text[:start] + text[end + 1:] if end >= 0 else text[:start]
        section = card_section(result, command) + "\n\n"
        text = text.replace("## Limits", section + "## Limits", 1) if "## Limits" in text else text.rstrip() + "\n\n" + section
        md.write_text(text)


def main(argv=None):
    import argparse
    import shlex
    import sys

    from ultralytics.utils import TQDM

    from wbc.arguments import FRACTION, POSITIVE_INT, RATE
    from wbc.canonical import prepare
    from wbc.inference import WBCAnalyzer, model_card
    from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir, runs_root
    from wbc.review.gather import gather
    from wbc.review.model import review_path_for

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--data", default=str(REPO_ROOT / "data" / "wbc_multisource.yaml"),
                   help="dataset yaml whose train cells give the OOD statistics and whose val cells the temperatures and operating point")
    p.add_argument("--ood", nargs="+", default=list(DEFAULT_OOD), choices=SCORES, help="scores summed into the OOD score")
    p.add_argument("--probability-share", type=FRACTION, default=DEFAULT_PROBABILITY_SHARE,
                   help="share of the review rate given to the type-probability test (the rest: the OOD score)")
    p.add_argument("--k", type=POSITIVE_INT, default=DEFAULT_K, help="neighbours of the kNN score")
    p.add_argument("--shrinkage", type=FRACTION, default=DEFAULT_SHRINKAGE, help="shrinkage of the Mahalanobis covariance")
    p.add_argument("--review-rate", type=RATE, default=DEFAULT_REVIEW_RATE, help="share of val cells of known types to flag")
    p.add_argument("--batch", type=POSITIVE_INT, default=16)
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    start = time.time()
    weights = Path(args.weights)
    canonical = prepare(args.data)
    analyzer = WBCAnalyzer(weights, review=False, keep_evidence=True)
    names = list(analyzer.model_names.values())
    listed = model_card(weights).get("wbc_classes") or canonical.spec.wbc_classes
    type_classes = [c for c in names if c in listed]
    evidence = {s: gather(analyzer, canonical, s, args.batch, lambda it, n, s=s: TQDM(it, total=n, desc=f"cells ({s})"), weights)
                for s in ("train", "val")}
    model, result = fit_review(evidence["train"], evidence["val"], names, type_classes, canonical.spec.label_sets, args.ood,
                               args.review_rate, args.probability_share, args.k, args.shrinkage, analyzer.type_share)
    out = new_run_dir(args.name, runs_root() / "calibrate")
    result = write_report(out, {"weights": str(weights), "data": args.data, "cells": {s: len(e.cells) for s, e in evidence.items()},
                                **result, "seconds": time.time() - start})
    model.save(review_path_for(weights))
    command = "python calibrate.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    update_card(weights, result, command)
    print(card_section(result, command))
    print(f"review model written to {review_path_for(weights)}; report in {out}")
