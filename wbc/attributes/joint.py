"""Joint training: the detector and the attribute head learn together in ultralytics' own loop.

ultralytics augments (mosaic, affine, mixup, flips) and filters boxes itself, so per-box attributes
have to travel with the boxes. They do so as a row number carried in the class channel: the
training dataset returns ``cls + nc * (row + 1)`` for a box whose attributes are row ``row`` of a
codes table (plain ``cls`` for a box without any), every transform keeps that number aligned with
its box, and the trainer's ``preprocess_batch`` splits it back into the class and the codes before
the loss sees them. Label files stay 5-column; validation uses the plain dataset.

The head is a submodule of the detection model while training, so the optimizer, gradient
clipping and EMA treat it like every other layer; ``save_model`` lifts it out, so ``last.pt`` and
``best.pt`` are plain ultralytics detector checkpoints with the head beside them
(``last.attributes.pt`` / ``best.attributes.pt``, found automatically by ``WBCAnalyzer``).
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ultralytics.data.build import get_split_fraction
from ultralytics.data.dataset import YOLODataset
from ultralytics.utils import LOGGER, colorstr
from ultralytics.utils.torch_utils import unwrap_model

from wbc.attributes.data import jitter_boxes
from wbc.attributes.head import AttributeHead, FeatureTap, HeadConfig, attribute_classes, head_path_for, layer_channels
from wbc.schema import UNKNOWN, load_spec
from wbc.training import WBCDetectionTrainer


def attribute_rows(table: pd.DataFrame, names: list[str], labels: list[dict], class_names: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """(codes (N, A) of every box with a known value, and per label entry the codes row of each of its
    boxes or -1). Boxes are matched to ``table`` rows by image, class and position (within 1 px), so
    ultralytics' own de-duplication or reordering of label rows cannot misalign them."""
    table = table[(table[names] >= 0).any(axis=1)].reset_index(drop=True)
    codes = table[names].to_numpy(np.int64, copy=True)  # writable: torch.from_numpy warns on a read-only view
    by_image = {image: rows for image, rows in table.groupby("image")}
    rows = []
    for label in labels:
        own = np.full(len(label["cls"]), -1, np.int64)
        mine = by_image.get(Path(label["im_file"]).name)
        if mine is not None and len(own):
            h, w = label["shape"]
            xywh = label["bboxes"] * np.array([w, h, w, h])
            xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            cls = [class_names[int(c)] for c in label["cls"].ravel()]
            candidates = mine[["x1", "y1", "x2", "y2"]].to_numpy(float)
            for j in range(len(own)):
                distance = np.abs(candidates - xyxy[j]).max(1)
                distance[mine["class"].to_numpy() != cls[j]] = np.inf
                k = int(distance.argmin())
                if distance[k] < 1.0:
                    own[j] = mine.index[k]
        rows.append(own)
    return codes, rows


class AttributeYOLODataset(YOLODataset):
    """YOLODataset whose items carry each box's attribute row in the class channel (see module doc)."""

    def __init__(self, *args, attribute_table: pd.DataFrame, attribute_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.nc = len(self.data["names"])
        names = [self.data["names"][i] for i in range(self.nc)]
        self.codes, self.rows = attribute_rows(attribute_table, attribute_names, self.labels, names)
        LOGGER.info(f"{self.prefix}{sum(int((r >= 0).sum()) for r in self.rows)} boxes carry attributes")

    def get_image_and_label(self, index: int) -> dict:
        label = super().get_image_and_label(index)
        label["cls"] = label["cls"] + self.nc * (self.rows[index].reshape(-1, 1) + 1).astype(label["cls"].dtype)
        return label


def split_attribute_rows(cls: torch.Tensor, codes: torch.Tensor, nc: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded class column (n, 1) -> (plain classes (n, 1), attribute codes (n, A), UNKNOWN where a box has none)."""
    encoded = cls.round().long().view(-1)
    row = encoded // nc - 1
    out = torch.full((len(encoded), codes.shape[1]), UNKNOWN, dtype=torch.long, device=cls.device)
    has = row >= 0
    out[has] = codes.to(cls.device)[row[has]]
    return (encoded % nc).to(cls.dtype).view(cls.shape), out


class JointCriterion:
    """The detector's own criterion plus ``weight`` x the attribute loss on the batch's ground-truth boxes
    (edge-jittered), pooled from the features of the same forward pass."""

    def __init__(self, detection, head: AttributeHead, tap: FeatureTap, weight: float, jitter: float):
        self.detection, self.head, self.tap, self.weight, self.jitter = detection, head, tap, weight, jitter

    def __call__(self, preds, batch):
        loss, items = self.detection(preds, batch)
        codes = batch["attribute_codes"]
        known = (codes >= 0).any(1)
        if known.any():
            h, w = batch["img"].shape[-2:]
            xywh = batch["bboxes"][known] * torch.tensor([w, h, w, h], device=codes.device)
            boxes = torch.cat([batch["batch_idx"][known].view(-1, 1).float(), xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            attr = self.head.loss(self.tap.features, jitter_boxes(boxes, self.jitter), (h, w), codes[known])
        else:
            attr = loss.sum() * 0.0
        batch_size = batch["img"].shape[0]
        return torch.cat([loss, (self.weight * attr * batch_size).view(1)]), {**items, "attr": attr.detach()}


def warm_head(path: Path, model: torch.nn.Module, attributes: list[dict], imgsz: int, classes: list[str] | None) -> AttributeHead:
    """A saved head to continue training on ``model``: its layers, members and weights, refused
    unless it predicts exactly ``attributes`` and its layers have the channels ``model`` gives."""
    head = AttributeHead.load(path).train()
    if head.config.attributes != attributes:
        raise ValueError(f"{path}: the head predicts {[a['name'] for a in head.config.attributes]} with their own value sets; "
                         f"the dataset's used attributes are {[a['name'] for a in attributes]} (names and values must match)")
    channels = layer_channels(model, head.config.layers, imgsz)
    if channels != list(head.config.in_channels):
        raise ValueError(f"{path}: the head pools layers {head.config.layers} with {head.config.in_channels} channels; "
                         f"this detector's have {channels}")
    head.config.imgsz, head.config.classes = imgsz, classes
    return head


class AttributeTrainer(WBCDetectionTrainer):
    """DetectionTrainer that trains an attribute head together with the detector (see module doc).

    Class attributes set before ``train()``: ``head_config`` (layers and size, the attributes being
    the dataset's used ones; or the path of a saved head to start from), ``attribute_weight`` (hyp
    key ``attribute``), ``attribute_jitter``."""

    head_config: HeadConfig | Path | None = None  # a saved head (.pt) warm-starts the joint head from its weights
    attribute_weight: float = 1.0
    attribute_jitter: float = 0.05

    def _attribute_names(self) -> list[dict]:
        return [{"name": a["name"], "values": list(a["values"])} for a in self.data["attributes"] if a.get("use", True)]

    def get_model(self, cfg=None, weights=None, verbose=True):
        model = super().get_model(cfg, weights, verbose)
        imgsz = int(self.args.imgsz)
        source = self.data.get("source_yaml")
        classes = attribute_classes(load_spec(source)) if source and Path(source).is_file() else None
        if isinstance(self.head_config, Path):
            model.attribute_head = warm_head(self.head_config, model, self._attribute_names(), imgsz, classes)
        else:
            cfg_head = replace(self.head_config or HeadConfig.from_yaml(), attributes=self._attribute_names(), imgsz=imgsz, classes=classes)
            cfg_head.in_channels = layer_channels(model, cfg_head.layers, imgsz)
            model.attribute_head = AttributeHead(cfg_head)
        saved = head_path_for(self.args.resume) if isinstance(self.args.resume, str) else None
        if saved is not None and saved.is_file():
            model.attribute_head.load_state_dict(AttributeHead.load(saved).state_dict())
        return model

    def build_dataset(self, img_path, mode="train", batch=None):
        if mode != "train":
            return super().build_dataset(img_path, mode, batch)
        root = Path(self.data["path"])
        table = pd.read_csv(root / "attributes.csv", keep_default_na=False)
        split = Path(img_path).name
        gs = max(int(unwrap_model(self.model).stride.max()), 32)
        return AttributeYOLODataset(
            img_path=img_path, imgsz=self.args.imgsz, batch_size=batch, augment=True, hyp=self.args, rect=self.args.rect,
            cache=self.args.cache or None, single_cls=self.args.single_cls or False, stride=gs, pad=0.0,
            prefix=colorstr(f"{mode}: "), task=self.args.task, classes=self.args.classes, data=self.data,
            fraction=get_split_fraction(self.args.fraction, "train"),
            attribute_table=table[table["split"] == split], attribute_names=[a["name"] for a in self._attribute_names()])

    def _setup_train(self):
        super()._setup_train()
        self._attach_joint_loss()  # after the EMA copy: the EMA holds neither the hooks nor the criterion's features

    def _attach_joint_loss(self):
        model = unwrap_model(self.model)
        self.tap = FeatureTap(model, model.attribute_head.config.layers)
        model.criterion = JointCriterion(model.init_criterion(), model.attribute_head, self.tap, self.attribute_weight, self.attribute_jitter)

    def preprocess_batch(self, batch):
        batch = super().preprocess_batch(batch)  # only the training loop calls it; validation has its own
        dataset = self.train_loader.dataset
        batch["cls"], batch["attribute_codes"] = split_attribute_rows(batch["cls"], torch.from_numpy(dataset.codes), dataset.nc)
        return batch

    def resume_training(self, ckpt):
        if ckpt is not None and self.resume and getattr(ckpt.get("ema"), "attribute_head", None) is None:
            ckpt["ema"].attribute_head = AttributeHead.load(head_path_for(self.args.resume)).half()  # strict EMA load needs it
        super().resume_training(ckpt)

    def _handle_nan_recovery(self, epoch):
        """ultralytics' NaN recovery reloads last.pt strictly into the model and rebuilds the EMA as a copy
        of the model. last.pt holds no head, and the criterion holds the last pass's features, which cannot
        be copied; so head, hooks and criterion are lifted out for that, and the head is then restored
        from last.attributes.pt into the model and into the rebuilt EMA."""
        model = unwrap_model(self.model)
        head = model.attribute_head
        self.tap.remove()
        del model.attribute_head
        model.criterion = None
        try:
            recovered = super()._handle_nan_recovery(epoch)
        finally:
            model.attribute_head = head
            self._attach_joint_loss()
        if recovered:  # the EMA was rebuilt from the model while the head was out
            head.load_state_dict(AttributeHead.load(head_path_for(self.last)).state_dict())
            self.ema.ema.attribute_head = deepcopy(head).requires_grad_(False)
        return recovered

    def save_model(self):
        """Detector checkpoints without the head (plain ultralytics files); the EMA head beside each."""
        ema = self.ema.ema
        head = ema.attribute_head
        del ema.attribute_head
        try:
            super().save_model()
        finally:
            ema.attribute_head = head
        head.save(head_path_for(self.last))
        if self.best_fitness == self.fitness:
            head.save(head_path_for(self.best))
        return True
