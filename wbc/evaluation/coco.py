"""pycocotools' COCOeval on a canonical split: the ground truth exported from the canonical box table,
the detections from the ultralytics validator's own predictions, so that the two mAP implementations
see exactly the same boxes and scores.

Category ids are class index + 1 (ultralytics' ``class_map`` for non-COCO data); image ids are
1-based positions in the split's sorted image list.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from wbc.canonical import CanonicalDataset


def ground_truth(canonical: CanonicalDataset, split: str) -> dict:
    """COCO ground-truth dict of every box in ``split`` (boxes in pixels of the original image)."""
    fields = canonical.fields()
    fields = fields[fields["split"] == split].sort_values("image")
    boxes = canonical.attributes()
    boxes = boxes[boxes["split"] == split]
    ids = {name: i + 1 for i, name in enumerate(fields["image"])}
    names = canonical.spec.names
    annotations = []
    for image, cls, x1, y1, x2, y2 in zip(boxes["image"], boxes["class"], boxes["x1"], boxes["y1"], boxes["x2"], boxes["y2"]):
        w, h = float(x2 - x1), float(y2 - y1)
        annotations.append({"id": len(annotations) + 1, "image_id": ids[image], "category_id": names.index(cls) + 1,
                            "bbox": [float(x1), float(y1), w, h], "area": w * h, "iscrowd": 0})
    return {"images": [{"id": ids[r.image], "file_name": r.image, "width": int(r.width), "height": int(r.height)} for r in fields.itertuples()],
            "annotations": annotations, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}


def detections(predictions: list[dict], gt: dict) -> list[dict]:
    """Ultralytics' ``pred_to_json`` records (keyed by ``file_name``) with the ground truth's image ids."""
    ids = {im["file_name"]: im["id"] for im in gt["images"]}
    return [{"image_id": ids[p["file_name"]], "category_id": p["category_id"], "bbox": p["bbox"], "score": p["score"]} for p in predictions]


def evaluate(gt: dict, dets: list[dict], max_det: int = 300) -> dict:
    """mAP50, mAP50-95 and AR (recall averaged over IoU 0.50:0.95) over all classes and per class
    (area 'all', ``max_det`` detections per image). Classes without ground truth are left out, as COCOeval does."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        e = COCOeval(coco_gt, coco_dt, "bbox")
        e.params.maxDets = [1, 10, max_det]
        e.evaluate()
        e.accumulate()
    precision = e.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, classes), area 'all', max_det
    recall = e.eval["recall"][:, :, 0, -1]  # (IoU thresholds, classes)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    per_class = {}
    for k, cat in enumerate(e.params.catIds):
        p = precision[:, :, k]
        if (p > -1).any():
            per_class[names[cat]] = {"mAP50": _mean_valid(p[0]), "mAP50-95": _mean_valid(p), "AR": _mean_valid(recall[:, k])}
    return {"mAP50": _mean_valid(precision[0]), "mAP50-95": _mean_valid(precision), "AR": _mean_valid(recall), "per_class": per_class}


def by_origin(gt: dict, dets: list[dict], origins: dict[str, str], max_det: int = 300) -> dict[str, dict]:
    """:func:`evaluate` on the fields of each origin alone (``origins``: file name -> origin), with the
    origin's image count."""
    result = {}
    for origin in sorted(set(origins.values())):
        ids = {im["id"] for im in gt["images"] if origins.get(im["file_name"]) == origin}
        sub = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
               "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
        result[origin] = {"images": len(ids), **evaluate(sub, [d for d in dets if d["image_id"] in ids], max_det)}
    return result


def _mean_valid(a: np.ndarray) -> float:
    a = a[a > -1]
    return float(a.mean()) if a.size else float("nan")
