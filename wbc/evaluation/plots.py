"""Confusion-matrix plots (PNG) for attributes and per-field WBC types; the detector's class confusion
matrix and PR curves come from the ultralytics validator."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_confusion(counts: np.ndarray, rows: list[str], cols: list[str], title: str, path: Path) -> None:
    """Row-normalised heat map of ``counts`` (true x predicted), each cell annotated with its count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(counts)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(4.0, 0.55 * max(len(rows), len(cols)) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true row")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_counts(truth: list[str], predicted: list[str], labels: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Counts over ``labels`` (rows: true labels present; columns: every label, plus any extra predicted one)."""
    cols = list(labels) + sorted(set(predicted) - set(labels))
    rows = [label for label in labels if label in set(truth)]
    m = np.zeros((len(rows), len(cols)), int)
    for t, p in zip(truth, predicted):
        m[rows.index(t), cols.index(p)] += 1
    return m, rows, cols
