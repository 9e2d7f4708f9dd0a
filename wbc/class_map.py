"""Evaluating or running a detector under another dataset's class list: a class map names, for every
class of the model, the dataset class it counts as (or null: its detections are dropped).

    # data/class_maps/pbc_to_bccd.yaml
    BA: WBC
    ERB: null
    PLT: Platelets

Several model classes may map to one dataset class; the mapped detections then go through NMS again
(per mapped class, same IoU), so that one cell called BNE and SNE by the model is one WBC, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torchvision.ops import batched_nms

from wbc.errors import UsageError


@dataclass(frozen=True)
class ClassMap:
    lookup: tuple[int, ...]  # model class id -> target class id, -1: dropped
    names: tuple[str, ...]  # target class names
    source: str  # where the map came from, for reports

    def apply(self, det: torch.Tensor, iou: float) -> torch.Tensor:
        """(n, 6+) detections [x1 y1 x2 y2 conf cls ...] in model classes -> the same in target classes,
        dropped classes removed, NMS per target class; sorted by confidence."""
        lookup = torch.tensor(self.lookup, device=det.device)
        cls = lookup[det[:, 5].long()]
        det = torch.cat([det[:, :5], cls[:, None].to(det.dtype), det[:, 6:]], 1)[cls >= 0]
        keep = batched_nms(det[:, :4], det[:, 4], det[:, 5].long(), iou)
        return det[keep]


def load_class_map(path: str | Path, model_names: list[str], target_names: list[str]) -> ClassMap:
    """Read a class-map yaml; every model class must be listed, every value must be a target class or null."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class map {path} not found")
    mapping = yaml.safe_load(path.read_text()) or {}
    if not isinstance(mapping, dict):
        raise UsageError(f"{path}: expected 'model class: dataset class' lines")
    unknown = [k for k in mapping if k not in model_names]
    missing = [n for n in model_names if n not in mapping]
    wrong = {k: v for k, v in mapping.items() if v is not None and v not in target_names}
    if unknown or missing or wrong:
        raise UsageError(f"{path}: " + "; ".join(filter(None, [
            unknown and f"not classes of the model: {unknown} (the model has {model_names})",
            missing and f"model classes not mapped (map them to null to drop them): {missing}",
            wrong and f"not classes of the dataset: {wrong} (the dataset has {target_names})"])))
    return ClassMap(tuple(-1 if mapping[n] is None else target_names.index(mapping[n]) for n in model_names), tuple(target_names), str(path))


def require_same_classes(model_names: list[str], target_names: list[str], data: str) -> None:
    if list(model_names) != list(target_names):
        raise UsageError(f"the model's classes {list(model_names)} differ from {data}'s {list(target_names)}: pass --class-map "
                         "(a yaml 'model class: dataset class or null', e.g. data/class_maps/pbc_to_bccd.yaml)")
