"""Out-of-distribution scores of a cell: higher means less like the cells the model was trained on.

- :class:`Mahalanobis` (Lee et al. 2018): squared Mahalanobis distance to the nearest class mean
  of the training cells, one covariance shared by the classes (shrunk towards its diagonal scale).
- :class:`NearestNeighbours` (Sun et al. 2022): cosine distance to the k-th nearest training cell,
  whatever its class, on L2-normalised features.
- :func:`energy` (Liu et al. 2020): minus the log-sum-exp of the type logits.

Each is fitted on feature vectors of training cells (:mod:`wbc.review.features`) and keeps only
plain tensors, so that it saves with the weights and loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F


class Mahalanobis:
    def __init__(self, means: torch.Tensor, precision: torch.Tensor):
        self.means, self.precision = means.float(), precision.float()

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, shrinkage: float = 0.1) -> "Mahalanobis":
        """``features`` (N, D), ``labels`` (N,) class indices; classes without a cell are left out."""
        features = features.double()
        classes = labels.unique()
        means = torch.stack([features[labels == c].mean(0) for c in classes])
        centred = features - means[torch.searchsorted(classes, labels)]
        cov = centred.T @ centred / max(len(features) - len(classes), 1)
        scale = cov.diagonal().mean()
        cov = (1 - shrinkage) * cov + shrinkage * scale * torch.eye(len(cov), dtype=cov.dtype)
        return cls(means, torch.linalg.inv(cov))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """(N, classes) squared distances."""
        d = features.float()[:, None, :] - self.means[None]
        return torch.einsum("nkd,de,nke->nk", d, self.precision, d)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        return self.distances(features).min(1).values

    def state(self) -> dict:
        return {"means": self.means, "precision": self.precision}


class NearestNeighbours:
    def __init__(self, bank: torch.Tensor, k: int = 10):
        self.bank, self.k = F.normalize(bank.float(), dim=1), int(k)

    @classmethod
    def fit(cls, features: torch.Tensor, k: int = 10, max_bank: int = 6000, seed: int = 0) -> "NearestNeighbours":
        """Keeps at most ``max_bank`` training cells (a random subset: the score needs their spread, not all of them)."""
        if len(features) > max_bank:
            features = features[torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:max_bank]]
        return cls(features, min(k, len(features)))

    def score(self, features: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        out = []
        for part in F.normalize(features.float(), dim=1).split(chunk):
            similarity = part @ self.bank.T
            out.append(1 - similarity.topk(self.k, dim=1).values[:, -1])
        return torch.cat(out) if out else torch.zeros(0)

    def state(self) -> dict:
        return {"bank": self.bank.half(), "k": self.k}


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """-T logsumexp(logits / T) per row: low for cells the type stage has strong evidence for."""
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=1)


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """P(an unknown cell scores above a known one), ties counted half (the Mann-Whitney U statistic)."""
    known, unknown = np.asarray(known, float), np.asarray(unknown, float)
    if not len(known) or not len(unknown):
        return float("nan")
    ranks = pd.Series(np.concatenate([known, unknown])).rank().to_numpy()
    u = ranks[len(known):].sum() - len(unknown) * (len(unknown) + 1) / 2
    return float(u / (len(known) * len(unknown)))
