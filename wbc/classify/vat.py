"""Virtual adversarial training (Miyato et al., 2018): the KL divergence between the model's
prediction on an input and on the input moved a distance ``eps`` in the direction, found by power
iteration, that changes the prediction most. It needs no labels and smooths the classifier
around every training point."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(d: torch.Tensor) -> torch.Tensor:
    """Each sample's perturbation scaled to L2 norm 1."""
    return d / (d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1))) + 1e-12)


def vat_loss(net: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor, xi: float = 1e-6, eps: float = 4.0,
             iterations: int = 1) -> torch.Tensor:
    """KL(p(x) || p(x + r_adv)) averaged over the batch. ``x``: the network's (normalised) input;
    ``logits``: the network's output on ``x``; ``xi``: the finite-difference step of the power
    iteration; ``eps``: the L2 norm of the adversarial perturbation, per sample, in ``x``'s units."""
    target = F.softmax(logits.detach(), dim=1)
    d = _unit(torch.randn_like(x))
    for _ in range(iterations):
        d.requires_grad_(True)
        divergence = F.kl_div(F.log_softmax(net(x.detach() + xi * d), dim=1), target, reduction="batchmean")
        d = _unit(torch.autograd.grad(divergence, d)[0].detach())
    return F.kl_div(F.log_softmax(net(x + eps * d), dim=1), target, reduction="batchmean")
