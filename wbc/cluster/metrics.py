"""Cluster scores against labels: Hungarian-matched accuracy (each cluster mapped to at most one
label, the mapping that maximises agreement), normalised mutual information, adjusted Rand index."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def hungarian_accuracy(labels, clusters) -> tuple[float, dict]:
    """(accuracy, {cluster: label}) under the best one-to-one matching of clusters to labels; clusters
    left without a label (more clusters than labels) count as wrong."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.dtype == object:  # e.g. a pandas column of names
        labels = labels.astype(str)
    names, ids = np.unique(labels), np.unique(clusters)
    table = np.zeros((len(ids), len(names)), int)
    for i, c in enumerate(ids):
        for j, n in enumerate(names):
            table[i, j] = np.sum((clusters == c) & (labels == n))
    rows, cols = linear_sum_assignment(-table)
    mapping = {ids[r].item(): names[c].item() for r, c in zip(rows, cols)}
    return float(table[rows, cols].sum() / len(labels)), mapping


def cluster_scores(labels, clusters) -> dict:
    accuracy, mapping = hungarian_accuracy(labels, clusters)
    return {"hungarian_accuracy": accuracy, "nmi": float(normalized_mutual_info_score(labels, clusters)),
            "ari": float(adjusted_rand_score(labels, clusters)), "mapping": {str(k): v for k, v in mapping.items()}}
