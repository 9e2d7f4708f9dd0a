"""Virtual adversarial training (Miyato et al., 2018): the KL divergence between the model's
prediction on an input and on the input moved a distance ``eps`` in the direction, found by power
iteration, that changes the prediction most. It needs no labels and smooths the classifier
around every training point.

The power iteration probes the network with a finite step ``xi``. The step must survive float32:
1e-6 (the reactive-lymphocyte reference) spread over a 3×96×96 input is about 6e-9 per value,
below float32's resolution of inputs near 1, so ``x + xi·d`` rounds back to ``x`` and the
"adversarial" direction is noise. 0.1 (the default) finds the same direction as a float64
computation at 1e-6 (cosine ≥ 0.99 in tests/test_classify.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each sample's perturbation scaled to L2 norm 1 (a zero one stays zero)."""
    norm = d.flatten(1).norm(dim=1).clamp_min(torch.finfo(d.dtype).tiny)
    return d / norm.view(-1, *([1] * (d.dim() - 1)))


def adversarial_direction(net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, xi: float = 0.1,
                          iterations: int = 1, start: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the unit direction in which ``net``'s prediction moves away from ``target``
    (probabilities) fastest: power iteration on the KL divergence's curvature, from ``start``
    (default: random)."""
    d = _unit(torch.randn_like(x) if start is None else start.to(x))
    for _ in range(iterations):
        d.requires_grad_(True)
        divergence = F.kl_div(F.log_softmax(net(x.detach() + xi * d), dim=1), target, reduction="batchmean")
        d = _unit(torch.autograd.grad(divergence, d)[0].detach())
    return d


def vat_loss(net: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor, xi: float = 0.1, eps: float = 4.0,
             iterations: int = 1) -> torch.Tensor:
    """KL(p(x) || p(x + r_adv)) averaged over the batch. ``x``: the network's (normalised) input;
    ``logits``: the network's output on ``x``; ``xi``: the finite-difference step of the power
    iteration; ``eps``: the L2 norm of the adversarial perturbation, per sample, in ``x``'s units."""
    target = F.softmax(logits.detach(), dim=1)
    d = adversarial_direction(net, x, target, xi, iterations)
    return F.kl_div(F.log_softmax(net(x + eps * d), dim=1), target, reduction="batchmean")
