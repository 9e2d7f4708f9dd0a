"""The review model stored beside a detector (``<stem>.review.pt``): what turns a detected WBC-type
cell's evidence (:mod:`wbc.review.features`) into

- a **calibrated type probability**: softmax over the typed classes' logits divided by a fitted
  temperature (:mod:`wbc.review.calibration`); with a type head (``head_share`` > 0), over the log of
  the fused distribution of the detector and the head (:mod:`wbc.type_fusion`);
- an **out-of-distribution score** (:mod:`wbc.review.scores`), from statistics of training cells of
  every source: one score or the sum of several, each scaled by its spread on val cells of known types;
- the **operating point** (:mod:`wbc.review.decision`), chosen on those val cells, and the val cells'
  own scores, so that any other review rate can be chosen at run time (``predict.py --review-rate``).

It also carries a temperature per attribute of the attribute head. Plain tensors and data only:
loads with ``torch.load(weights_only=True)``. Fitted by ``calibrate.py`` (:mod:`wbc.review.fit`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wbc.review.decision import DEFAULT_PROBABILITY_SHARE, DEFAULT_REVIEW_RATE, OperatingPoint, choose_operating_point
from wbc.review.features import DEFAULT_LAYERS, logits_of
from wbc.review.scores import Mahalanobis, NearestNeighbours, energy
from wbc.type_fusion import fused_log_probabilities
from wbc.weights import read_checkpoint

SCORES = ("knn", "mahalanobis", "energy")


def review_path_for(detector_weights: str | Path) -> Path:
    p = Path(detector_weights)
    return p.with_name(p.stem + ".review.pt")


@dataclass
class ReviewModel:
    type_classes: list[str]  # the detector classes whose logits make the type distribution
    class_index: list[int]  # their indices among the detector's classes
    temperature: float = 1.0
    attribute_temperatures: dict[str, float] = field(default_factory=dict)
    layers: list[int] = field(default_factory=lambda: list(DEFAULT_LAYERS))
    roi_size: int = 7
    head_features: bool = True  # the feature vector includes the classification branch's (wbc.review.features.Evidence)
    knn: NearestNeighbours | None = None
    mahalanobis: Mahalanobis | None = None
    ood: list[str] = field(default_factory=lambda: ["knn"])  # the scores summed into the OOD score
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # score -> (median, q95 - median) on val known cells
    known: dict[str, np.ndarray] = field(default_factory=dict)  # val known cells: type_probability, ood, weight
    review_rate: float = DEFAULT_REVIEW_RATE
    probability_share: float = DEFAULT_PROBABILITY_SHARE  # how the rate is split between the two tests (wbc.review.decision)
    head_share: float = 0.0  # the type head's share of the type distribution (wbc.type_fusion; 0: the detector's classes alone)

    def type_logits(self, class_scores: torch.Tensor) -> torch.Tensor:
        """(K, nc) detector sigmoid scores -> (K, typed classes) logits (the energy score's)."""
        return logits_of(class_scores[:, self.class_index])

    def type_log_probabilities(self, class_scores: torch.Tensor, head_probabilities: torch.Tensor | None = None) -> torch.Tensor:
        """(K, typed classes) log type distribution before calibration: the detector's, fused with the type
        head's (K, typed classes) probabilities where given and ``head_share`` > 0."""
        return fused_log_probabilities(class_scores[:, self.class_index], head_probabilities, self.head_share).float()

    def type_probabilities(self, class_scores: torch.Tensor, calibrated: bool = True,
                           head_probabilities: torch.Tensor | None = None) -> torch.Tensor:
        return (self.type_log_probabilities(class_scores, head_probabilities) / (self.temperature if calibrated else 1.0)).softmax(1)

    def raw_scores(self, embeddings: torch.Tensor, class_scores: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"energy": energy(self.type_logits(class_scores))}
        if self.knn is not None:
            out["knn"] = self.knn.score(embeddings)
        if self.mahalanobis is not None:
            out["mahalanobis"] = self.mahalanobis.score(embeddings)
        return out

    def combine(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        """The OOD score: the chosen scores, each as (score - val median) / val spread, summed."""
        total = 0
        for name in self.ood:
            median, spread = self.spread.get(name, (0.0, 1.0))
            total = total + (raw[name] - median) / (spread or 1.0)
        return total

    def score(self, embeddings: torch.Tensor, class_scores: torch.Tensor,
              head_probabilities: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(calibrated probability of the most likely typed class, its index in ``type_classes``, OOD score) per cell."""
        p, index = self.type_probabilities(class_scores, head_probabilities=head_probabilities).max(1)
        return p, index, self.combine(self.raw_scores(embeddings, class_scores))

    def operating_point(self, review_rate: float | None = None) -> OperatingPoint:
        """The thresholds that flag ``review_rate`` (default: the stored rate) of the val cells of known types."""
        k = self.known
        return choose_operating_point(k["type_probability"], k["ood"], self.review_rate if review_rate is None else review_rate,
                                      k.get("weight"), self.probability_share)

    def save(self, path: str | Path) -> None:
        torch.save({
            "type_classes": self.type_classes, "class_index": self.class_index, "temperature": self.temperature,
            "attribute_temperatures": self.attribute_temperatures, "layers": self.layers, "roi_size": self.roi_size,
            "head_features": self.head_features,
            "knn": self.knn.state() if self.knn else None, "mahalanobis": self.mahalanobis.state() if self.mahalanobis else None,
            "ood": self.ood, "spread": {k: list(v) for k, v in self.spread.items()},
            "known": {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in self.known.items()}, "review_rate": self.review_rate,
            "probability_share": self.probability_share, "head_share": self.head_share,
        }, path)

    @classmethod
    def load(cls, path: str | Path) -> "ReviewModel":
        s = read_checkpoint(path, "review model", ("knn", "mahalanobis"))
        s.setdefault("probability_share", DEFAULT_PROBABILITY_SHARE)
        s.setdefault("head_share", 0.0)  # a review model from before type heads
        knn, maha = s.pop("knn"), s.pop("mahalanobis")
        return cls(**{**s, "spread": {k: tuple(v) for k, v in s["spread"].items()},
                      "known": {k: v.numpy().astype(float) for k, v in s["known"].items()},
                      "knn": NearestNeighbours(knn["bank"], knn["k"]) if knn else None,
                      "mahalanobis": Mahalanobis(maha["means"], maha["precision"]) if maha else None})
