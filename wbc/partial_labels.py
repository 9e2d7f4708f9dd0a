"""Boxes whose type is only partly known, in the typed detector's own loss.

A merged dataset (wbc/formats/merge.py) labels a WBC of unknown type with a *label set*: class id
``nc + j`` means "one of the classes of set j" (TXL-PBC's WBC: any WBC type; BCCD's NEUTROPHIL: BNE
or SNE). ultralytics' loss has one positive class per box; here:

- assignment (task-aligned) scores a set-labelled box against the probability that the anchor is
  *some* member, ``1 - prod(1 - p_k)`` over the set (noisy-OR), instead of one class's score;
- classification: an anchor assigned to a set-labelled box is pushed towards "some member" by
  binary cross-entropy on that noisy-OR probability; its members' individual scores get no other
  target, so no type is taught, and classes outside the set are pushed to 0 as for any box;
- a typed box is untouched: the same one-hot target and loss as plain ultralytics.

A set's target row carries its alignment score spread evenly over its members (the row sums to
the score, as a one-hot row does, so box-loss weights and normalisation stay ultralytics'); a row
with more than one positive entry is how the loss tells a set from a single class (a one-class set
is just that class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ultralytics.utils.loss import v8DetectionLoss
from ultralytics.utils.tal import TaskAlignedAssigner


def set_matrix(label_sets: dict[str, list[str]], names: list[str]) -> torch.Tensor:
    """(S, nc) float membership of each label set over the model's classes."""
    m = torch.zeros(len(label_sets), len(names))
    for j, members in enumerate(label_sets.values()):
        if len(members) < 2:
            raise ValueError(f"label set {list(label_sets)[j]!r} needs at least two classes (a single class is that class's label)")
        for c in members:
            m[j, names.index(c)] = 1.0
    return m


def any_member(p: torch.Tensor, sets: torch.Tensor) -> torch.Tensor:
    """Probabilities (..., nc) -> probability that some member of each set is present (..., S) (noisy-OR)."""
    return 1 - torch.exp(torch.log1p(-p.clamp(max=1 - 1e-6)) @ sets.T.to(p.dtype))


def some_member_scores(scores: torch.Tensor, members: list[int]) -> torch.Tensor:
    """Raw class scores (B, nc, anchors) -> the same with the members' scores rescaled so that their
    highest becomes the probability that *some* member is present (noisy-OR, never below that
    highest): a box's confidence is then how likely it is to be one of them (a WBC of some type, the
    quantity the loss teaches on untyped boxes), and its most likely member stays the same."""
    if not members:
        return scores
    index = torch.as_tensor(members, device=scores.device)
    p = scores.index_select(1, index)
    top = p.max(1, keepdim=True).values
    some = any_member(p.transpose(1, 2), torch.ones(1, len(members), device=scores.device)).transpose(1, 2)
    out = scores.clone()
    out[:, index] = p * (torch.maximum(some, top) / top.clamp_min(1e-12))
    return out


class PartialLabelAssigner(TaskAlignedAssigner):
    """TaskAlignedAssigner for labels ``0..nc-1`` (classes) and ``nc..nc+S-1`` (label sets)."""

    def __init__(self, sets: torch.Tensor, **kwargs):
        self.nc = kwargs.pop("num_classes")
        super().__init__(num_classes=self.nc + len(sets), **kwargs)
        self.sets = sets

    @torch.no_grad()
    def forward(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra):
        sets = self.sets.to(pd_scores.device)
        scores = torch.cat([pd_scores, any_member(pd_scores, sets)], -1)
        labels, boxes, target, fg, idx = super().forward(scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra)
        spread = (sets / sets.sum(1, keepdim=True)).to(target.dtype)
        return labels, boxes, target[..., :self.nc] + target[..., self.nc:] @ spread, fg, idx


class PartialLabelBCE:
    """Elementwise BCE-with-logits where a target row with several positive entries means "one of
    these": the row's loss is BCE(noisy-OR of the members, the row's sum) on the members, placed in
    the first member's column, plus the ordinary BCE towards 0 of the non-members."""

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        members = target > 0
        partial = members.sum(-1) > 1
        if not partial.any():
            return loss
        x, t, m = logits[partial], target[partial].sum(-1), members[partial]
        log_none = -(F.softplus(x) * m).sum(-1)  # log P(no member) = sum of log(1 - sigmoid(x)) over members
        log_some = torch.log(-torch.expm1(log_none.clamp(max=-1e-6)))
        set_loss = -(t * log_some + (1 - t) * log_none)
        rows = loss[partial].masked_fill(m, 0.0)
        first = m.float().argmax(-1, keepdim=True)
        rows = rows.scatter_add(-1, first, set_loss.unsqueeze(-1).to(rows.dtype))
        loss = loss.clone()
        loss[partial] = rows
        return loss


class PartialLabelDetectionLoss(v8DetectionLoss):
    """ultralytics' detection loss with label sets (see the module doc)."""

    def __init__(self, model, sets: torch.Tensor, tal_topk: int = 10, tal_topk2: int | None = None):
        super().__init__(model, tal_topk, tal_topk2)
        self.assigner = PartialLabelAssigner(sets, topk=tal_topk, num_classes=self.nc, alpha=0.5, beta=6.0,
                                             stride=self.stride.tolist(), topk2=tal_topk2)
        self.bce = PartialLabelBCE()
