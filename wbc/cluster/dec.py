"""Deep embedded clustering (Xie, Girshick, Farhadi 2016) on cell embeddings.

An optional autoencoder (an MLP, as in the paper: D-500-500-2000-10) is pretrained to reconstruct the
embeddings; its code (or the standardised embedding itself) is clustered by k-means, whose centres
start a clustering layer: soft assignment q_ij by a Student's t kernel, target p_ij = q_ij^2 / f_j
(renormalised; f_j the soft cluster size) that sharpens confident assignments, and KL(P || Q)
minimised over encoder and centres (Adadelta, as the reference notebook), the target refreshed every
``update_every`` steps, until fewer than ``tol`` of the assignments change.

``idec``: improved DEC (Guo, Gao, Liu, Yin 2017): the decoder is kept and its reconstruction loss
stays in the objective beside the clustering loss weighted by ``idec`` (γ, 0.1 in the paper), so
that refining the clusters cannot distort the embedding's local structure (Adam, lr 1e-4).

:func:`clustering_space`: the space clustered when there is no autoencoder (the standardised embedding,
or its first principal components)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn
from torch.nn import functional as F


def soft_assignment(z: torch.Tensor, centres: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    q = (1 + torch.cdist(z, centres).square() / alpha).pow(-(alpha + 1) / 2)
    return q / q.sum(1, keepdim=True)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    p = q.square() / q.sum(0)
    return p / p.sum(1, keepdim=True)


class AutoEncoder(nn.Module):
    def __init__(self, dim: int, hidden=(500, 500, 2000), code: int = 10):
        super().__init__()
        sizes = [dim, *hidden, code]
        enc, dec = [], []
        for a, b in zip(sizes[:-1], sizes[1:]):
            enc += [nn.Linear(a, b), nn.ReLU()]
        for a, b in zip(sizes[::-1][:-1], sizes[::-1][1:]):
            dec += [nn.Linear(a, b), nn.ReLU()]
        self.encoder, self.decoder = nn.Sequential(*enc[:-1]), nn.Sequential(*dec[:-1])

    def forward(self, x):
        return self.decoder(self.encoder(x))


def clustering_space(features: np.ndarray, pca: int | None = None, seed: int = 0) -> np.ndarray:
    """The standardised embedding, or its first ``pca`` principal components (which :func:`dec` standardises
    in turn: whitened)."""
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    if not pca:
        return x
    from sklearn.decomposition import PCA

    return PCA(pca, random_state=seed).fit_transform(x)


@dataclass
class DECResult:
    kmeans: np.ndarray  # k-means assignment of the starting space
    kmeans_confidence: np.ndarray  # the soft assignment (Student's t) of that cluster under the k-means centres
    clusters: np.ndarray  # DEC's hard assignment
    confidence: np.ndarray  # DEC's soft assignment of that cluster
    steps: int


def dec(features: np.ndarray, k: int, autoencoder: bool = False, seed: int = 0, pretrain_epochs: int = 50, steps: int = 2000,
        update_every: int = 100, batch: int = 256, tol: float = 0.001, restarts: int = 100, progress=None,
        idec: float | None = None) -> DECResult:
    """``restarts``: k-means runs from different starts, the one of least inertia kept (on PBC's cells the
    partition still moves between 10 starts of different seeds; at 100 it no longer does)."""
    if idec is not None and not autoencoder:
        raise ValueError("IDEC keeps the autoencoder's reconstruction loss: it needs autoencoder=True")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(clustering_space(features).astype(np.float32))
    if autoencoder:
        ae = AutoEncoder(x.shape[1])
        optimiser = torch.optim.Adam(ae.parameters(), 1e-3)
        for _ in range(pretrain_epochs):
            for idx in torch.randperm(len(x)).split(batch):
                optimiser.zero_grad()
                F.mse_loss(ae(x[idx]), x[idx]).backward()
                optimiser.step()
        encoder = ae.encoder
    else:
        encoder = nn.Identity()
    with torch.no_grad():
        z = encoder(x)
    km = KMeans(k, n_init=restarts, random_state=seed).fit(z.numpy())
    centres = nn.Parameter(torch.from_numpy(km.cluster_centers_.astype(np.float32)))
    with torch.no_grad():
        start = soft_assignment(z, centres).gather(1, torch.from_numpy(km.labels_.astype(np.int64))[:, None])[:, 0].numpy()
    params = [centres, *(ae.parameters() if idec is not None else encoder.parameters())]  # IDEC trains the decoder too
    optimiser = torch.optim.Adam(params, 1e-4) if idec is not None else torch.optim.Adadelta(params, lr=1.0)
    previous, step = km.labels_.copy(), 0
    iterator = range(steps) if progress is None else progress(range(steps))
    for step in iterator:
        if step % update_every == 0:
            with torch.no_grad():
                q = soft_assignment(encoder(x), centres)
                p = target_distribution(q)
                now = q.argmax(1).numpy()
            if step and (now != previous).mean() < tol:
                break
            previous = now
        idx = torch.from_numpy(rng.choice(len(x), min(batch, len(x)), replace=False))
        optimiser.zero_grad()
        code = encoder(x[idx])
        loss = F.kl_div(soft_assignment(code, centres).log(), p[idx], reduction="batchmean")
        if idec is not None:
            loss = F.mse_loss(ae.decoder(code), x[idx]) + idec * loss
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        q = soft_assignment(encoder(x), centres)
    confidence, clusters = q.max(1)
    return DECResult(km.labels_, start, clusters.numpy(), confidence.numpy(), step)
