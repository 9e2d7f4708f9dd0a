"""Train the attribute head on a frozen detector's features, from ground-truth boxes with jitter.

The detector runs without gradients; only the head learns. Each epoch ends with a validation on
ground-truth boxes; the best head (mean accuracy) is kept. Output: runs/attributes/<name>/
(head.pt, results.csv, metrics.json).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from ultralytics.utils import LOGGER, TQDM

from wbc.attributes.data import AttributeFields, collate, jitter_boxes
from wbc.attributes.head import AttributeHead, FeatureTap, HeadConfig, attribute_loss
from wbc.attributes.metrics import summarize_attributes
from wbc.canonical import prepare
from wbc.inference import load_detector
from wbc.paths import REPO_ROOT, new_run_dir


def balanced_weights(dataset: AttributeFields, value_counts: list[int]) -> list[torch.Tensor]:
    """Per attribute, value weights inversely proportional to frequency (mean 1) over known values."""
    codes = np.concatenate([c for _, _, c in dataset.items])
    weights = []
    for a, n in enumerate(value_counts):
        counts = np.bincount(codes[codes[:, a] >= 0, a], minlength=n).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n, 0.0)
        weights.append(torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32))
    return weights


@torch.no_grad()
def predict_codes(detector, tap: FeatureTap, head: AttributeHead, loader: DataLoader, device) -> tuple[np.ndarray, np.ndarray]:
    """(true codes, predicted codes) for every ground-truth box of the loader."""
    head.eval()
    truth, predicted = [], []
    for images, boxes, codes in loader:
        images = images.to(device)
        detector(images)
        logits = head(tap.features, boxes.to(device), tuple(images.shape[-2:]))
        predicted.append(torch.stack([out.argmax(1) for out in logits], 1).cpu().numpy())
        truth.append(codes.numpy())
    return np.concatenate(truth), np.concatenate(predicted)


def train_head(weights: str, data: str, epochs: int = 10, batch: int = 16, imgsz: int | None = None, name: str = "exp",
               config: str | None = None, lr: float = 1e-3, jitter: float = 0.05, balance: bool = False, device: str = "cpu",
               workers: int = 2, project: Path | None = None, data_root: str | None = None, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    canonical = prepare(data, data_root)
    detector, _, args = load_detector(weights)
    device = torch.device(device)
    detector.to(device)
    for p in detector.parameters():
        p.requires_grad_(False)
    imgsz = imgsz or int(args.get("imgsz", 640))
    spec = canonical.spec
    used = spec.used_attributes
    cfg = replace(HeadConfig.from_yaml(config), attributes=[{"name": a.name, "values": list(a.values)} for a in used], imgsz=imgsz)
    tap = FeatureTap(detector, cfg.layers)
    detector(torch.zeros(1, 3, imgsz, imgsz, device=device))
    cfg.in_channels = [f.shape[1] for f in tap.features]
    head = AttributeHead(cfg).to(device)

    train_set, val_set = AttributeFields(canonical, "train", imgsz), AttributeFields(canonical, "val", imgsz)
    train_loader = DataLoader(train_set, batch, shuffle=True, num_workers=workers, collate_fn=collate)
    val_loader = DataLoader(val_set, batch, shuffle=False, num_workers=workers, collate_fn=collate)
    class_weights = balanced_weights(train_set, cfg.value_counts) if balance else None
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * len(train_loader))
    out = new_run_dir(name, project or REPO_ROOT / "runs" / "attributes")
    out.mkdir(parents=True)
    names = [a.name for a in used]
    best, history = -1.0, []
    for epoch in range(epochs):
        head.train()
        start, total = time.time(), 0.0
        bar = TQDM(train_loader, desc=f"head epoch {epoch + 1}/{epochs}")
        for i, (images, boxes, codes) in enumerate(bar):
            images = images.to(device)
            with torch.no_grad():
                detector(images)
            logits = head(tap.features, jitter_boxes(boxes, jitter).to(device), tuple(images.shape[-2:]))
            loss = attribute_loss(logits, codes.to(device), class_weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (i + 1):.4f}")
        epoch_s = time.time() - start
        scores = summarize_attributes(names, cfg.value_counts, *predict_codes(detector, tap, head, val_loader, device))
        history.append({"epoch": epoch + 1, "train_loss": total / len(train_loader), "epoch_s": epoch_s,
                        "val_mean_accuracy": scores["mean_accuracy"], "val_mean_macro_f1": scores["mean_macro_f1"]})
        LOGGER.info(f"head epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f}, val mean accuracy {scores['mean_accuracy']:.4f}, "
                    f"mean macro-F1 {scores['mean_macro_f1']:.4f} ({epoch_s:.0f} s)")
        if scores["mean_accuracy"] > best:
            best = scores["mean_accuracy"]
            head.save(out / "head.pt")
            (out / "metrics.json").write_text(json.dumps({"epoch": epoch + 1, "val_on_ground_truth_boxes": scores}, indent=2))
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    tap.remove()
    return {"save_dir": out, "best_mean_accuracy": best, "history": history}


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="trained detector (ultralytics checkpoint)")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--config", help="head config yaml (default attribute_head/default.yaml)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, help="default: the detector's training size")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--jitter", type=float, default=0.05, help="box edge jitter, fraction of box size")
    p.add_argument("--balance", action="store_true", help="weight rare values up in the loss")
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    result = train_head(args.weights, args.data, args.epochs, args.batch, args.imgsz, args.name, args.config, args.lr,
                        args.jitter, args.balance, args.device)
    print(f"best val mean accuracy (ground-truth boxes) {result['best_mean_accuracy']:.4f}; head at {result['save_dir'] / 'head.pt'}")


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
