"""A crop classifier run on chosen detections (e.g. lymphocyte-like cells -> reactive / normal).

Configuration (yaml):

    name: reactive                 # what the call is called in outputs
    classes: [LY, VLY]             # detector classes whose cells are classified
    weights: runs/classify/ly_reactive/best.pt   # a wbc.classify.train checkpoint (relative: to the yaml's folder, then the repo)

Each such cell is cropped from the original image the way its training crops were cut (margin and
squaring from the crop dataset's ``crops.json``, kept in the checkpoint), resized as in validation,
and gets the classifier's label and probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from wbc.classify.backbone import TimmClassifier
from wbc.classify.crops import crop_box
from wbc.classify.train import load_classifier, prepare_crops
from wbc.errors import UsageError
from wbc.paths import REPO_ROOT


@dataclass
class CellClassifier:
    name: str
    classes: tuple[str, ...]  # detector classes sent to the classifier
    model: TimmClassifier
    labels: list[str]  # the classifier's classes
    imgsz: int
    margin: float = 0.1
    square: bool = True
    temperature: float = 1.0  # fitted on val by wbc.classify.train (calibrate_checkpoint)

    @classmethod
    def from_yaml(cls, path: str | Path, device: str = "cpu") -> "CellClassifier":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"cell classifier configuration {path} not found")
        cfg = yaml.safe_load(path.read_text()) or {}
        missing = [k for k in ("name", "classes", "weights") if k not in cfg]
        unknown = sorted(set(cfg) - {"name", "classes", "weights"})
        if missing or unknown:
            raise UsageError(f"{path}: " + "; ".join(filter(None, [missing and f"missing keys {missing}",
                                                                    unknown and f"unknown keys {unknown}"])))
        weights = next((p for p in (path.parent / cfg["weights"], REPO_ROOT / cfg["weights"], Path(cfg["weights"])) if p.is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path}: classifier weights {cfg['weights']} not found (relative to {path.parent} or {REPO_ROOT})")
        model, meta = load_classifier(weights, device)
        crop = meta.get("crop") or {}
        return cls(cfg["name"], tuple(cfg["classes"]), model, list(meta["classes"]), int(meta["config"]["imgsz"]),
                   float(crop.get("margin", 0.1)), bool(crop.get("square", True)), float(meta.get("temperature", 1.0)))

    @torch.no_grad()
    def classify(self, image: np.ndarray, boxes: list) -> list[tuple[str, float]]:
        """(label, probability) for each xyxy box of one BGR image."""
        if not boxes:
            return []
        crops = [crop_box(image, b, self.margin, self.square) for b in boxes]
        probs = (self.model(prepare_crops(crops, self.imgsz).to(self.model.mean.device)) / self.temperature).softmax(1).cpu()

        return [(self.labels[int(p.argmax())], float(p.max())) for p in probs]
