"""Confidence calibration: temperature scaling (Guo et al. 2017), expected calibration error and
reliability diagrams.

One temperature per output head divides its logits before the softmax; it is fitted on val cells by
minimising the negative log-likelihood, so it changes how sure the model says it is, never which
class it picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """The T > 0 that minimises the cross-entropy of ``softmax(logits / T)`` on ``labels`` (N,);
    1.0 where there is nothing to fit."""
    if len(labels) < 2:
        return 1.0
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros(1, dtype=torch.double, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Per equal-width confidence bin: its range, cell count, mean confidence and accuracy."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "cells": int(inside.sum()),
                     "confidence": float(confidence[inside].mean()) if inside.any() else None,
                     "accuracy": float(correct[inside].mean()) if inside.any() else None})
    return rows


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the cell-weighted mean |accuracy - confidence| over the bins."""
    n = len(confidence)
    return float(sum(r["cells"] * abs(r["accuracy"] - r["confidence"]) for r in reliability(confidence, correct, bins) if r["cells"]) / n) if n else float("nan")


def reliability_diagram(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, bins: int = 15) -> None:
    """One line per ``{label: (confidence, correct)}`` (e.g. before / after calibration): accuracy per
    confidence bin against the diagonal, with each curve's ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for label, (confidence, correct) in curves.items():
        rows = [r for r in reliability(confidence, correct, bins) if r["cells"]]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", ms=3,
                label=f"{label} (ECE {100 * ece(confidence, correct, bins):.1f}%)")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
