"""Choose the detector layers the attribute head pools, by measurement.

    .venv/bin/python benchmarks/attribute_layers.py --weights weights/wbc_multisource_yolov5n_352.pt --epochs 15

Runs the frozen detector once over train and val, caching the union of every candidate's layers,
then trains one head per candidate on the same cache (same seed, epochs, learning rate) and
reports its best val mean accuracy and macro-F1 on ground-truth boxes, its epoch time and size.
Writes runs/benchmark/attribute_layers/<name>/results.json.
"""

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from wbc.attributes.data import AttributeFields
from wbc.attributes.features import FieldFeatures
from wbc.attributes.head import AttributeHead, HeadConfig
from wbc.attributes.train import CachedBatches, fit_head, frozen_detector
from wbc.canonical import prepare
from wbc.paths import REPO_ROOT, new_run_dir

# (layers, roi_size, hidden, box_size); indices of models/yolov5.yaml: 2/4/6/9 backbone at strides 4/8/16/32, 17/20/23 neck at 8/16/32
CANDIDATES = [
    ([2, 4], 7, 128, False),
    ([4, 6], 7, 128, False),
    ([2, 4, 6], 7, 128, False),
    ([2, 4, 6, 9], 7, 128, False),
    ([17, 20, 23], 7, 128, False),
    ([2, 4, 17, 20, 23], 7, 128, False),
    ([2, 4, 6, 9], 7, 256, False),
    ([4, 6], 7, 128, True),
]


def parse(text: str):
    layers, roi, hidden, *size = text.split(":")
    return [int(v) for v in layers.split(",")], int(roi), int(hidden), bool(size and size[0] == "size")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights/wbc_multisource_yolov5n_352.pt")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--imgsz", type=int)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--candidates", nargs="+", type=parse,
                   help="layers:roi:hidden[:size], e.g. 2,4:7:128 or 4,6:7:128:size (box size fed to the MLP); default: a built-in list")
    p.add_argument("--name", default="exp")
    args = p.parse_args()
    candidates = args.candidates or CANDIDATES
    device = torch.device("cpu")
    canonical = prepare(args.data)
    union = sorted({layer for layers, *_ in candidates for layer in layers})
    detector, tap, imgsz, channels = frozen_detector(args.weights, union, args.imgsz, device)
    attributes = [{"name": a.name, "values": list(a.values)} for a in canonical.spec.used_attributes]
    start = time.time()
    cache = {s: FieldFeatures(detector, tap, AttributeFields(canonical, s, imgsz), args.batch, device) for s in ("train", "val")}
    cache_s = time.time() - start
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmark" / "attribute_layers")
    rows = []
    summary = {"weights": args.weights, "data": args.data, "imgsz": imgsz, "epochs": args.epochs, "lr": args.lr, "batch": args.batch,
               "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or 'cpu'}",
               "feature_cache_s": cache_s, "evaluated_on": "val ground-truth boxes", "results": rows}
    for layers, roi, hidden, box_size in candidates:
        torch.manual_seed(0)
        cfg = replace(HeadConfig(layers=layers, roi_size=roi, hidden=hidden, box_size=box_size), attributes=attributes, imgsz=imgsz,
                      in_channels=[channels[union.index(layer)] for layer in layers])
        head = AttributeHead(cfg)
        tag = f"L{'-'.join(map(str, layers))}_r{roi}_h{hidden}" + ("_size" if box_size else "")
        result = fit_head(head, CachedBatches(cache["train"].select(layers), args.batch, True, device),
                          CachedBatches(cache["val"].select(layers), args.batch, False, device), (imgsz, imgsz), out / tag,
                          args.epochs, args.lr, device=device)
        best = result["best"]
        rows.append({"layers": layers, "roi_size": roi, "hidden": hidden, "box_size": box_size, "parameters": sum(p.numel() for p in head.parameters()),
                     "best_epoch": best["epoch"], "val_mean_accuracy": best["mean_accuracy"], "val_mean_macro_f1": best["mean_macro_f1"],
                     "epoch_s": sum(h["epoch_s"] for h in result["history"]) / len(result["history"]),
                     "per_attribute_accuracy": {n: s["accuracy"] for n, s in best["per_attribute"].items()}})
        print(f"{tag}: val mean accuracy {best['mean_accuracy']:.4f}, macro-F1 {best['mean_macro_f1']:.4f}", flush=True)
        (out / "results.json").write_text(json.dumps(summary, indent=2))  # after every candidate: a stopped run keeps its results
    print(f"\n{'layers':<20} {'roi':>4} {'hidden':>6} {'size':>5} {'params':>8} {'mean acc':>9} {'macro-F1':>9} {'epoch s':>8}")
    for r in rows:
        print(f"{','.join(map(str, r['layers'])):<20} {r['roi_size']:>4} {r['hidden']:>6} {'yes' if r['box_size'] else 'no':>5} {r['parameters']:>8} "
              f"{r['val_mean_accuracy'] * 100:>8.2f}% {r['val_mean_macro_f1'] * 100:>9.2f} {r['epoch_s']:>8.1f}")
    print(f"written to {out / 'results.json'}")


if __name__ == "__main__":
    main()
