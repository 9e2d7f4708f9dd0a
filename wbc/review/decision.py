"""The review decision: a WBC-type cell goes to "unidentified" when its calibrated type probability
is low or its out-of-distribution score is high. The two thresholds are one operating point, chosen
on val cells of known types for a target flag rate (the share of known cells a technologist is
asked to review; default 5%): the probability is cut at a tail share ``probability_share`` x a and the
OOD score at (1 - ``probability_share``) x a, and a is raised until the cells flagged by either
reach the target."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

LOW_PROBABILITY, UNFAMILIAR = "low type probability", "unlike training cells"
DEFAULT_REVIEW_RATE = 0.05
DEFAULT_PROBABILITY_SHARE = 0.2  # chosen by benchmarks/unseen_types.py on PBC val (docs/review.md)


@dataclass(frozen=True)
class OperatingPoint:
    review_rate: float  # the share of val cells of known types it flags
    min_type_probability: float
    max_ood: float

    def reason(self, type_probability: float, ood: float) -> str:
        """Why a WBC-type cell is flagged ('' when it is not)."""
        why = [LOW_PROBABILITY] * (type_probability < self.min_type_probability) + [UNFAMILIAR] * (ood > self.max_ood)
        return " + ".join(why)

    def as_dict(self) -> dict:
        return asdict(self)


def weighted_quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> float:
    """The smallest value with at least a ``q`` share of the weight at or below it."""
    values = np.asarray(values, float)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, float)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][min(np.searchsorted(cumulative, q), len(values) - 1)])


def flag_rate(op: OperatingPoint, type_probability: np.ndarray, ood: np.ndarray, weights: np.ndarray | None = None) -> float:
    flagged = (np.asarray(type_probability) < op.min_type_probability) | (np.asarray(ood) > op.max_ood)
    weights = np.ones(len(flagged)) if weights is None else np.asarray(weights, float)
    return float((flagged * weights).sum() / weights.sum())


def choose_operating_point(type_probability: np.ndarray, ood: np.ndarray, review_rate: float = DEFAULT_REVIEW_RATE,
                           weights: np.ndarray | None = None, probability_share: float = DEFAULT_PROBABILITY_SHARE) -> OperatingPoint:
    """Thresholds that flag ``review_rate`` of the given known cells (``weights``: e.g. one over each
    source's cell count, so that every source counts the same). ``probability_share``: how the rate is
    split between the two tests before their overlap (0: the OOD score alone, 1: the probability alone)."""
    if not 0 <= review_rate < 1:
        raise ValueError(f"review rate must be in [0, 1), got {review_rate}")
    if not 0 <= probability_share <= 1:
        raise ValueError(f"probability share must be in [0, 1], got {probability_share}")
    p, o = np.asarray(type_probability, float), np.asarray(ood, float)
    if not len(p):
        raise ValueError("no known cells to choose an operating point on")

    def at(a: float) -> OperatingPoint:
        share_p, share_o = probability_share * a, (1 - probability_share) * a
        low = weighted_quantile(p, share_p, weights) if share_p > 0 else 0.0
        high = weighted_quantile(o, 1 - share_o, weights) if share_o > 0 else float("inf")
        return OperatingPoint(review_rate, low, high)

    lo, hi = 0.0, 2 * review_rate
    for _ in range(40):  # the union's rate grows with a: bisect for the largest a within the target
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if flag_rate(at(mid), p, o, weights) <= review_rate else (lo, mid)
    return at(lo)
