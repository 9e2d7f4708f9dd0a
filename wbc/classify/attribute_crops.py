"""A crop classifier for per-box attributes: the baseline the attribute head is measured against.

Each cell is cut from the field at the detector's input scale (the field resized so that its
longer side is ``imgsz``, as the letterbox does), square with a margin, and resized to ``crop``
pixels: the classifier sees the cell at the resolution the detector sees it. A timm backbone
(default efficientnet_lite0 with ImageNet weights) feeds one linear layer per attribute; the
loss is the head's masked per-attribute cross-entropy.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from ultralytics.utils import LOGGER

from wbc.attributes.head import attribute_loss
from wbc.attributes.metrics import summarize_attributes
from wbc.attributes.train import train_one_epoch
from wbc.canonical import CanonicalDataset
from wbc.classify.backbone import TimmClassifier
from wbc.classify.crops import crop_box


def field_at_scale(image: np.ndarray, imgsz: int) -> tuple[np.ndarray, float]:
    """The field resized so that its longer side is ``imgsz`` (the letterbox's scale), and the gain."""
    gain = imgsz / max(image.shape[:2])
    return cv2.resize(image, (round(image.shape[1] * gain), round(image.shape[0] * gain)), interpolation=cv2.INTER_AREA), gain


def cut_crops(images: dict[str, np.ndarray], boxes: list[tuple[str, np.ndarray]], imgsz: int, crop: int, margin: float) -> np.ndarray:
    """(N, crop, crop, 3) uint8 crops of ``boxes`` [(image name, xyxy in original pixels)]."""
    out = np.empty((len(boxes), crop, crop, 3), np.uint8)
    scaled = {}
    for i, (name, box) in enumerate(boxes):
        if name not in scaled:
            scaled[name] = field_at_scale(images[name], imgsz)
        field, gain = scaled[name]
        out[i] = crop_box(field, np.asarray(box, float) * gain, margin, square=True, size=crop)
    return out


def ground_truth_crops(canonical: CanonicalDataset, split: str, names: list[str], imgsz: int, crop: int, margin: float):
    """(crops, codes (N, A)) for every ground-truth box with a known value of ``names``."""
    table = canonical.attributes()
    table = table[(table["split"] == split) & (table[names] >= 0).any(axis=1)]
    images = {name: cv2.imread(str(canonical.root / "images" / split / name)) for name in table["image"].unique()}
    boxes = list(zip(table["image"], table[["x1", "y1", "x2", "y2"]].to_numpy(float)))
    return cut_crops(images, boxes, imgsz, crop, margin), table[names].to_numpy(np.int64)


class Crops(Dataset):
    def __init__(self, crops: np.ndarray, codes: np.ndarray, augment: bool):
        self.crops, self.codes = crops, codes
        self.transform = A.Compose([A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(),
                                    A.ColorJitter(0.1, 0.1, 0.05, 0.02, p=0.5)]) if augment else None

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i):
        image = self.crops[i][..., ::-1]  # BGR -> RGB
        if self.transform:
            image = self.transform(image=np.ascontiguousarray(image))["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), torch.tensor(self.codes[i])


class CropAttributeClassifier(nn.Module):
    """timm backbone -> one logit vector per attribute. Input: uint8 RGB (B, 3, H, W)."""

    def __init__(self, value_counts: list[int], backbone: str = "efficientnet_lite0", pretrained: bool = True):
        super().__init__()
        self.model = TimmClassifier(backbone, sum(value_counts), pretrained)
        self.value_counts = value_counts

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(images).split(self.value_counts, dim=1))


@torch.no_grad()
def predict(model: CropAttributeClassifier, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    """(N, A) predicted value indices."""
    model.eval()
    loader = DataLoader(Crops(crops, np.zeros((len(crops), 1), np.int64), augment=False), batch)
    return np.concatenate([torch.stack([o.argmax(1) for o in model(x)], 1).numpy() for x, _ in loader])


def fit(model: CropAttributeClassifier, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], names: list[str],
        epochs: int = 10, batch: int = 32, lr: float = 1e-3, workers: int = 2) -> list[dict]:
    """Train on (crops, codes); validate each epoch on the val crops; restore the best epoch's weights."""
    loader = DataLoader(Crops(*train, augment=True), batch, shuffle=True, num_workers=workers, drop_last=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * len(loader))
    history, best_state, best = [], None, -1.0
    for epoch in range(epochs):
        model.train()
        train_loss, epoch_s = train_one_epoch(loader, lambda images, codes: attribute_loss(model(images), codes), optimizer, scheduler,
                                              f"crop classifier epoch {epoch + 1}/{epochs}")
        scores = summarize_attributes(names, model.value_counts, val[1], predict(model, val[0]))
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "epoch_s": round(epoch_s, 1),
                        "val_mean_accuracy": scores["mean_accuracy"], "val_mean_macro_f1": scores["mean_macro_f1"]})
        LOGGER.info(f"crop classifier epoch {epoch + 1}: val mean accuracy {scores['mean_accuracy']:.4f}, "
                    f"macro-F1 {scores['mean_macro_f1']:.4f} ({epoch_s:.0f} s)")
        if scores["mean_accuracy"] > best:
            best, best_state = scores["mean_accuracy"], {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return history
