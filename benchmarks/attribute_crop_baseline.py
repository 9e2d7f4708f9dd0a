"""Crop-classifier baseline for the attribute head, at the same input resolution.

    .venv/bin/python benchmarks/attribute_crop_baseline.py --weights weights/wbc_pbc_yolov5n_352.pt --epochs 6

Trains wbc.classify.attribute_crops (efficientnet_lite0, ImageNet weights) on ground-truth crops
cut at the detector's input scale, then scores it and the detector's attribute head on the same
val boxes: ground-truth crops, and the detector's predicted boxes matched one-to-one to ground
truth at IoU >= 0.5. Writes runs/benchmark/attribute_crop_baseline/<name>/results.json.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import torch

from wbc.attributes.metrics import summarize_attributes
from wbc.canonical import prepare
from wbc.classify.attribute_crops import CropAttributeClassifier, cut_crops, fit, ground_truth_crops, predict
from wbc.evaluation.cells import attribute_metrics, collect
from wbc.evaluation.report import attribute_table
from wbc.inference import WBCAnalyzer
from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="detector (and its head beside it)")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--imgsz", type=int, help="crops are cut at this scale (default: the detector's own input size)")
    p.add_argument("--crop", type=int, help="crop side in pixels at that scale (default: half the input size; 176 at 352)")
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--no-pretrained", action="store_true")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--name", default="exp")
    args = p.parse_args()
    torch.manual_seed(0)
    canonical = prepare(args.data)
    analyzer = WBCAnalyzer(args.weights, imgsz=args.imgsz)
    args.imgsz = analyzer.imgsz
    args.crop = args.crop or args.imgsz // 2
    specs = [{"name": a.name, "values": list(a.values)} for a in canonical.spec.used_attributes]
    names = [s["name"] for s in specs]
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmark" / "attribute_crop_baseline")
    out.mkdir(parents=True)

    train = ground_truth_crops(canonical, "train", names, args.imgsz, args.crop, args.margin)
    val = ground_truth_crops(canonical, "val", names, args.imgsz, args.crop, args.margin)
    model = CropAttributeClassifier([len(s["values"]) for s in specs], args.backbone, not args.no_pretrained)
    start = time.time()
    history = fit(model, train, val, names, args.epochs, args.batch, args.lr)
    train_s = time.time() - start
    torch.save(model.state_dict(), out / "crop_classifier.pt")
    on_truth = summarize_attributes(names, model.value_counts, val[1], predict(model, val[0]))

    cells = collect(analyzer, canonical, "val")
    known = (cells.truth[names] >= 0).any(axis=1)
    pairs = [m for m in cells.matches(0.5) if known[m.truth]]  # crops of boxes without attributes would not be scored
    images = {name: cv2.imread(str(canonical.root / "images" / "val" / name)) for name in {m.image for m in pairs}}
    crops = cut_crops(images, [(m.image, np.array(cells.cells[m.image][m.cell].box)) for m in pairs], args.imgsz, args.crop, args.margin)
    on_detections = attribute_metrics(cells, pairs, specs, predict(model, crops))
    # the head's values come with the same detections (one detector pass serves both)
    head = attribute_metrics(cells, pairs, specs) if analyzer.attribute_specs == specs else None

    result = {"weights": args.weights, "data": args.data, "imgsz": args.imgsz, "crop": args.crop, "margin": args.margin,
              "backbone": args.backbone, "pretrained": not args.no_pretrained, "epochs": args.epochs, "train_s": train_s,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads", "history": history,
              "crop_classifier": {"val_ground_truth_crops": on_truth, "val_from_detections": on_detections},
              "attribute_head": {"val_from_detections": head}}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"crop classifier, val ground-truth crops: mean accuracy {on_truth['mean_accuracy'] * 100:.2f}%, "
          f"macro-F1 {on_truth['mean_macro_f1'] * 100:.2f}")
    print(f"\ncrop classifier, val from detections ({on_detections['matched']} of {on_detections['ground_truth_boxes_with_attributes']} matched):")
    print(attribute_table(on_detections))
    if head:
        print(f"\nattribute head, val from detections ({head['matched']} of {head['ground_truth_boxes_with_attributes']} matched):")
        print(attribute_table(head))
    print(f"written to {out / 'results.json'}")


if __name__ == "__main__":
    main()
