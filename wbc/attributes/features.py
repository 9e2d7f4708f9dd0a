"""The frozen detector's feature maps of every field, computed once and kept in RAM.

With the detector frozen and no image augmentation, every epoch of head training would run the
same detector forward pass again; caching its tapped maps (float16) makes an epoch cost only the
head. Box jitter still varies per epoch, because RoIAlign runs on the cached maps.
"""

from __future__ import annotations

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset
from ultralytics.utils import LOGGER, TQDM

from wbc.attributes.data import AttributeFields, collate
from wbc.attributes.head import FeatureTap


def cache_bytes(tap: FeatureTap, n_fields: int) -> int:
    """Bytes that float16 copies of the tapped maps of ``n_fields`` fields would take, sized from the
    tap's last forward pass (``probe_channels``' blank image of the training size)."""
    return n_fields * 2 * sum(f[0].numel() for f in tap.features)


def cache_fits(nbytes: int, share: float = 0.5) -> bool:
    return nbytes < share * psutil.virtual_memory().available


class FieldFeatures(Dataset):
    """One item per field: (list of float16 maps (C_i, H_i, W_i), boxes (k, 4) xyxy in network-input
    pixels, codes (k, A)). ``levels`` picks which of the tapped layers an item returns."""

    def __init__(self, detector: torch.nn.Module, tap: FeatureTap, fields: AttributeFields, batch: int, device, workers: int = 0):
        self.layers = list(tap.layers)
        self.levels = list(range(len(self.layers)))
        self.items: list[tuple[list[torch.Tensor], np.ndarray, np.ndarray]] = []
        loader = DataLoader(fields, batch, shuffle=False, num_workers=workers, collate_fn=collate)
        with torch.no_grad():
            for images, boxes, codes in TQDM(loader, desc=f"detector features ({fields.split})"):
                detector(images.to(device))
                maps = [f.half().cpu() for f in tap.features]
                for i in range(len(images)):
                    mine = boxes[:, 0] == i
                    self.items.append(([m[i].clone() for m in maps], boxes[mine, 1:].numpy(), codes[mine].numpy()))
        LOGGER.info(f"cached detector features of {len(self.items)} {fields.split} fields "
                    f"({sum(m.numel() for m in self.items[0][0]) * 2 * len(self.items) / 2**30:.2f} GiB)")

    def select(self, layers: list[int]) -> "FieldFeatures":
        """The same cache returning only ``layers`` (a subset of the tapped layers), without copying."""
        view = object.__new__(FieldFeatures)
        view.__dict__.update(self.__dict__)
        view.levels = [self.layers.index(layer) for layer in layers]
        return view

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        maps, boxes, codes = self.items[i]
        return [maps[level] for level in self.levels], boxes, codes


def collate_features(batch):
    """-> maps per level (B, C, H, W) float, boxes (K, 5) [batch index, x1, y1, x2, y2], codes (K, A)."""
    maps, boxes, codes = zip(*batch)
    levels = [torch.stack([m[level] for m in maps]).float() for level in range(len(maps[0]))]
    indexed = [np.concatenate([np.full((len(b), 1), i, np.float32), b], 1) for i, b in enumerate(boxes)]
    return levels, torch.from_numpy(np.concatenate(indexed)), torch.from_numpy(np.concatenate(codes))
