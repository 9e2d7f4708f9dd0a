"""Leave-classes-out evaluation of the review decision: a type stage trained without some classes
meets them at test time, and should send them (and non-cells) to "unidentified".

The type stage here is a linear probe on the cells' cached feature vectors (:mod:`wbc.review.gather`),
trained on the known classes only; the OOD statistics are fitted on the same known training cells.
Every score is measured by its AUROC of unseen against known val cells; the decision (calibrated probe
probability or OOD score, :mod:`wbc.review.decision`) is cross-fitted: temperature, spreads and the
operating point come from one half of the val fields and are applied to the other, then the halves swap."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from wbc.review.calibration import ece, fit_temperature
from wbc.review.decision import choose_operating_point
from wbc.review.scores import Mahalanobis, NearestNeighbours, auroc, energy


class LinearProbe(nn.Module):
    """Standardised features -> class logits, fitted by L-BFGS on cross-entropy with an L2 penalty."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, classes: int, weight_decay: float = 1e-3, steps: int = 300):
        super().__init__()
        self.register_buffer("mean", features.mean(0))
        self.register_buffer("std", features.std(0) + 1e-6)
        self.linear = nn.Linear(features.shape[1], classes)
        x = self.standardise(features)
        optimiser = torch.optim.LBFGS(self.linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            loss = F.cross_entropy(self.linear(x), labels) + weight_decay * self.linear.weight.square().sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        self.eval()

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.standardise(features))


def raw_scores(probe: LinearProbe, knn: NearestNeighbours, maha: Mahalanobis, features: torch.Tensor) -> dict[str, np.ndarray]:
    """Every score of the given cells, higher = less like the known training cells; 'msp' is one minus
    the uncalibrated maximum softmax probability (its AUROC does not depend on the temperature)."""
    logits = probe(features)
    return {"msp": (1 - logits.softmax(1).max(1).values).numpy(), "energy": energy(logits).numpy(),
            "knn": knn.score(features).numpy(), "mahalanobis": maha.score(probe.standardise(features)).numpy()}


def combined(scores: dict[str, np.ndarray], names: list[str], spread: dict[str, tuple[float, float]]) -> np.ndarray:
    return sum(((scores[n] - spread[n][0]) / (spread[n][1] or 1.0) for n in names), np.zeros(len(next(iter(scores.values())))))


def evaluate_run(train_x, train_y, val_x, val_y, known: list[str], unseen: dict[str, torch.Tensor], val_fold: np.ndarray,
                 decisions: dict[str, list[str]], review_rate: float = 0.05, probability_share: float = 0.5,
                 k: int = 10, shrinkage: float = 0.1) -> dict:
    """One leave-classes-out run. ``train_y``/``val_y``: class names; cells of ``known`` are known, the
    val cells of other classes are the left-out ones; ``unseen``: further groups' feature vectors (ERB,
    platelets, artefacts: scored against the known val cells; each split in halves by position);
    ``val_fold``: 0/1 per val cell, its field's half. ``decisions``: name -> the OOD scores summed into
    that decision's OOD score."""
    index = {c: i for i, c in enumerate(known)}
    tr = np.array([y in index for y in train_y])
    xs, ys = train_x[tr], torch.tensor([index[y] for y in np.asarray(train_y)[tr]])
    probe = LinearProbe(xs, ys, len(known))
    knn = NearestNeighbours.fit(xs, k)
    maha = Mahalanobis.fit(probe.standardise(xs), ys, shrinkage)
    is_known = np.array([y in index for y in val_y])
    groups = {"left out": val_x[~is_known], **unseen}
    known_x = val_x[is_known]
    known_y = torch.tensor([index[y] for y in np.asarray(val_y)[is_known]])
    known_fold, left_fold = val_fold[is_known], val_fold[~is_known]
    s_known = raw_scores(probe, knn, maha, known_x)
    s_groups = {g: raw_scores(probe, knn, maha, x) for g, x in groups.items() if len(x)}
    out = {"known": known, "cells": {"train known": int(tr.sum()), "val known": int(is_known.sum()),
                                     **{g: int(len(x)) for g, x in groups.items()}},
           "known accuracy": float((probe(known_x).argmax(1) == known_y).float().mean()),
           "auroc": {g: {k: auroc(s_known[k], v) for k, v in s.items()} for g, s in s_groups.items()}}
    spread_all = {k: (float(np.median(v)), float(np.quantile(v, 0.95) - np.median(v))) for k, v in s_known.items()}
    for name, ood in decisions.items():
        if len(ood) > 1:  # the AUROC of a summed score (each scaled by its spread on all known val cells)
            for g, s in s_groups.items():
                out["auroc"][g][name] = auroc(combined(s_known, ood, spread_all), combined(s, ood, spread_all))
    # the decision, cross-fitted over the two halves of the val fields
    logits_known = probe(known_x)
    group_folds = {"left out": left_fold, **{g: np.arange(len(x)) % 2 for g, x in unseen.items()}}
    decided = {}
    for name, ood in decisions.items():
        flagged = {g: np.zeros(len(x), bool) for g, x in groups.items()}
        flagged_known = np.zeros(is_known.sum(), bool)
        eces = []
        for half in (0, 1):
            fit, apply = known_fold == half, known_fold != half
            t = fit_temperature(logits_known[fit], known_y[fit])
            spread = {k: (float(np.median(v[fit])), float(np.quantile(v[fit], 0.95) - np.median(v[fit]))) for k, v in s_known.items()}
            p_known = (logits_known / t).softmax(1).max(1).values.numpy()
            eces.append(ece(p_known[apply], (logits_known.argmax(1) == known_y).numpy()[apply]))
            op = choose_operating_point(p_known[fit], combined(s_known, ood, spread)[fit], review_rate,
                                        probability_share=probability_share if ood else 1.0)
            flagged_known[apply] = (p_known[apply] < op.min_type_probability) | (combined(s_known, ood, spread)[apply] > op.max_ood)
            for g, x in groups.items():
                if not len(x):
                    continue
                rows = group_folds[g] != half
                p = (probe(x) / t).softmax(1).max(1).values.numpy()
                flagged[g][rows] = ((p < op.min_type_probability) | (combined(s_groups[g], ood, spread) > op.max_ood))[rows]
        decided[name] = {"known unidentified": float(flagged_known.mean()), "type ECE (held-out half)": float(np.mean(eces)),
                         **{f"{g} unidentified": float(f.mean()) for g, f in flagged.items() if len(f)}}
    out["decision"] = decided
    return out
