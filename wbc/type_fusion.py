"""A WBC's type from two opinions of one detector pass: the detector's classes and a type head on its
features (``wbc.attributes.train --types``, ``<stem>.types.pt`` beside the weights).

The detector's sigmoid scores of the typed classes become a distribution (softmax of their logits,
as the review model's type probability); the head gives its own. The fused distribution is their
weighted geometric mean, ``head_share`` the head's weight (0: the detector alone, 1: the head
alone). Measured in docs/cross_source.md: on sources it was trained on the head types better, on a
source nobody trained on the detector does; the mean keeps most of the first and little of the loss
of the second, and where the two disagree its probability is low, so the review decision sends the
cell to "unidentified" more often. The model card records the share (``type_head``)."""

from __future__ import annotations

from pathlib import Path

import torch

from wbc.review.features import logits_of


def types_path_for(detector_weights: str | Path) -> Path:
    p = Path(detector_weights)
    return p.with_name(p.stem + ".types.pt")


def detector_log_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """(K, T) sigmoid scores of the typed classes -> log of the distribution their logits give."""
    return logits_of(scores).double().log_softmax(1)


def fused_log_probabilities(scores: torch.Tensor, head_probabilities: torch.Tensor | None, head_share: float) -> torch.Tensor:
    """(K, T) log of the fused type distribution (renormalised); the detector's alone without the head,
    and for rows of ``head_probabilities`` that hold NaN (a cell the head did not type)."""
    if not 0 <= head_share <= 1:
        raise ValueError(f"head share must be in [0, 1], got {head_share}")
    detector = detector_log_probabilities(scores)
    if head_probabilities is None or head_share == 0:
        return detector
    head = torch.as_tensor(head_probabilities, dtype=torch.float64, device=detector.device)
    missing = head.isnan().any(1, keepdim=True)
    fused = ((1 - head_share) * detector + head_share * head.nan_to_num(1.0).clamp_min(1e-12).log()).log_softmax(1)
    return torch.where(missing, detector, fused)
