"""Detection metrics of a split from the ultralytics validator (per class P, R, mAP50, mAP50-95, its
PR curves and confusion matrix), keeping the validator's predictions for COCOeval and the per-field
WBC type."""

from __future__ import annotations

from pathlib import Path

import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import ConfusionMatrix

from wbc.canonical import CanonicalDataset
from wbc.class_map import ClassMap


class KeepPredictionsValidator(DetectionValidator):
    """Collects every prediction as a COCO record (``save_json``) but leaves the COCO evaluation to
    :mod:`wbc.evaluation.coco`, which exports its own ground truth (ultralytics would try to install
    faster-coco-eval here). With ``target_classes``, predictions are mapped to the dataset's classes
    after NMS and metrics are computed in those classes."""

    target_classes: ClassMap | None = None  # (DetectionValidator.class_map is its COCO category-id list)
    factors: dict[str, float] | None = None  # image file name -> resize to the training scale (wbc.rescale)
    fit: float = 1.0  # the training fields' letterbox gain
    colour = None  # a wbc.colour.ColourReference: fields in the training fields' colours, as inference sees them

    def build_dataset(self, img_path, mode="val", batch=None):
        if not self.factors and self.colour is None:
            return super().build_dataset(img_path, mode, batch)
        from wbc.rescale import scaled_dataset

        return scaled_dataset(self.args, img_path, batch, self.data, mode, self.stride, self.factors or None, self.fit, colour=self.colour)

    def init_metrics(self, model):
        super().init_metrics(model)
        if self.target_classes:
            self.names = dict(enumerate(self.target_classes.names))
            self.nc = len(self.names)
            self.metrics.names = self.names
            self.confusion_matrix = ConfusionMatrix(names=self.names, save_matches=self.args.plots and self.args.visualize)

    def postprocess(self, preds):
        outputs = super().postprocess(preds)
        if not self.target_classes:
            return outputs
        mapped = []
        for x in outputs:
            det = self.target_classes.apply(torch.cat([x["bboxes"], x["conf"][:, None], x["cls"][:, None], x["extra"]], 1), self.args.iou)
            mapped.append({"bboxes": det[:, :4], "conf": det[:, 4], "cls": det[:, 5], "extra": det[:, 6:]})
        return mapped

    def eval_json(self, stats):
        return stats


def validate(weights: str | Path, canonical: CanonicalDataset, split: str, imgsz: int, batch: int, iou: float,
             device: str, save_dir: Path, plots: bool = True, class_map: ClassMap | None = None,
             factors: dict[str, float] | None = None, fit: float = 1.0, colour=None) -> tuple[dict, list[dict]]:
    """(metrics, predictions). Metrics: overall and per-class P, R, mAP50, mAP50-95 at the validator's
    conf 0.001 (P and R at the confidence of best mean F1, as ultralytics reports them). Predictions:
    ultralytics' COCO records with ``file_name``, ``category_id`` (class + 1), ``bbox`` xywh, ``score``.
    ``factors``: resize each image (by file name) by this on top of ``fit``, the letterbox gain of a
    training field (:mod:`wbc.rescale`). ``colour``: a :class:`wbc.colour.ColourReference` each field's
    colours are moved to, as inference does."""
    from wbc.weights import load_yolo

    yolo = load_yolo(weights)
    args = {**yolo.overrides, "rect": True, "data": str(canonical.validation_yaml(split)), "split": split, "imgsz": imgsz, "batch": batch,
            "conf": 0.001, "iou": iou, "device": device, "plots": plots, "save_json": True, "verbose": False, "mode": "val"}
    validator = KeepPredictionsValidator(save_dir=save_dir, args=args, _callbacks=yolo.callbacks)
    validator.target_classes, validator.factors, validator.fit, validator.colour = class_map, factors, fit, colour
    validator(model=yolo.model)
    box = validator.metrics.box
    per_class = {}
    for i, c in enumerate(box.ap_class_index):
        p, r, ap50, ap = box.class_result(i)
        per_class[validator.names[int(c)]] = {"instances": int(validator.metrics.nt_per_class[int(c)]), "P": float(p), "R": float(r),
                                         "mAP50": float(ap50), "mAP50-95": float(ap)}
    metrics = {"P": float(box.mp), "R": float(box.mr), "mAP50": float(box.map50), "mAP50-95": float(box.map),
               "instances": int(validator.metrics.nt_per_class.sum()), "per_class": per_class}
    return metrics, validator.jdict
