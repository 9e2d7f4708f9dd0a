"""Attention crop and attention erase (WT-DFN / WS-DAN style) for the crop classifier.

The classifier's own class activation map of the true class (its last feature maps weighted by that
class's classifier row, Zhou et al. 2016) says where it looks. Per training image, two more views
join the batch's loss:

- **crop** ("see details"): the box around the map above a threshold drawn from U(0.4, 0.6) of its
  peak, cut from the image and resized back to the input size;
- **erase** ("see more"): the region above a threshold drawn from U(0.2, 0.5) of its peak set to the
  crops' padding grey, so that the network has to find other evidence.

The loss is the mean of the three cross-entropies (raw, crop, erase), as in WS-DAN's training."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F


def class_activation(net, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, maps (B, H, W) in [0, 1]) of a timm classifier on normalised input ``x``: the map of
    each image's class in ``labels``, from the last feature maps and the classifier's weights."""
    features = net.forward_features(x)
    logits = net.forward_head(features)
    weight = net.get_classifier().weight[labels]  # (B, C)
    maps = F.relu(torch.einsum("bc,bchw->bhw", weight, features)).detach()
    peak = maps.flatten(1).max(1).values.clamp_min(1e-8)
    return logits, maps / peak[:, None, None]


def attention_boxes(maps: torch.Tensor, size: tuple[int, int], thresholds: torch.Tensor) -> torch.Tensor:
    """(B, 4) xyxy boxes in pixels of an input of ``size`` (H, W) around each map above its threshold."""
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    boxes = []
    for m, t in zip(up, thresholds):
        ys, xs = torch.nonzero(m >= t, as_tuple=True)
        if not len(xs):
            ys, xs = torch.nonzero(m >= m.max(), as_tuple=True)
        boxes.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())
    return torch.stack(boxes)


def attention_crop(images: torch.Tensor, maps: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Each image cut to its attention box and resized back to the input size."""
    h, w = images.shape[-2:]
    out = []
    for image, (x1, y1, x2, y2) in zip(images, attention_boxes(maps, (h, w), thresholds).long().tolist()):
        patch = image[:, y1:y2, x1:x2].float()[None]
        out.append(F.interpolate(patch, size=(h, w), mode="bilinear", align_corners=False)[0])
    return torch.stack(out).to(images.dtype)


def attention_erase(images: torch.Tensor, maps: torch.Tensor, thresholds: torch.Tensor, fill: float) -> torch.Tensor:
    """Each image with the region where its map is above the threshold set to ``fill``."""
    up = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
    mask = up >= thresholds.view(-1, 1, 1, 1)
    return torch.where(mask, torch.full_like(images, fill), images)


def attention_loss(model, images: torch.Tensor, labels: torch.Tensor, label_smoothing: float, fill: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean cross-entropy of the raw, attention-cropped and attention-erased views (``images``: uint8-range RGB)."""
    logits, maps = class_activation(model.net, model.normalize(images), labels)
    n = len(images)
    crop_t = torch.empty(n).uniform_(0.4, 0.6, generator=generator).to(images.device)
    erase_t = torch.empty(n).uniform_(0.2, 0.5, generator=generator).to(images.device)
    views = [attention_crop(images, maps, crop_t), attention_erase(images, maps, erase_t, fill)]
    losses = [F.cross_entropy(logits, labels, label_smoothing=label_smoothing)]
    losses += [F.cross_entropy(model(v), labels, label_smoothing=label_smoothing) for v in views]
    return torch.stack(losses).mean()


@torch.no_grad()
def save_attention_maps(model, samples: list, imgsz: int, out, count: int = 8) -> None:
    """``attention/<crop name>.jpg``: a few val crops beside their class activation map (the class the
    model predicts) and the attention crop and erase the training would make of them (thresholds 0.5 and 0.35)."""
    import cv2
    import numpy as np

    from wbc.classify.crops import PAD_VALUE
    from wbc.classify.train import prepare_crops, read_crop

    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    step = max(1, len(samples) // count)
    for path, _ in samples[::step][:count]:
        images = prepare_crops([read_crop(path)], imgsz).float().to(model.mean.device)
        logits = model(images)
        _, maps = class_activation(model.net, model.normalize(images), logits.argmax(1))
        heat = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[0, 0].cpu().numpy()
        views = [images[0], attention_crop(images, maps, torch.tensor([0.5]))[0], attention_erase(images, maps, torch.tensor([0.35]), float(PAD_VALUE))[0]]
        rgb = [v.permute(1, 2, 0).cpu().numpy().clip(0, 255).astype(np.uint8)[..., ::-1] for v in views]
        overlay = cv2.addWeighted(rgb[0], 0.5, cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), 0.5, 0)
        cv2.imwrite(str(out / f"{Path(path).stem}.jpg"), np.hstack([rgb[0], overlay, rgb[1], rgb[2]]))
