"""Train the attribute head on a frozen detector's features, from ground-truth boxes with jitter.
With ``--types`` it is a type head instead: one attribute, the WBC type among the dataset's
``wbc_classes``, learnt from the typed boxes only (a WBC of unknown type is masked out) — design (a)
of docs/cross_source.md, typing on the detector's features rather than by its classes.

The detector runs without gradients; only the head learns. Its tapped feature maps are computed
once and cached in RAM when they fit (``cache``), so an epoch costs only the head. Each epoch ends
with a validation on ground-truth boxes; the best head (mean accuracy) is kept. Output:
runs/attributes/<name>/ (head.pt, results.csv, metrics.json).

    .venv/bin/python -m wbc.attributes.train --weights best.pt --data data/pbc_wbcatt.yaml
    .venv/bin/python -m wbc.attributes.train --weights best.pt --data data/pbc_wbcatt.yaml --types --name types
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from ultralytics.utils import LOGGER, TQDM

from wbc.attributes.data import CELL_TYPE, AttributeFields, collate, jitter_boxes
from wbc.attributes.features import FieldFeatures, cache_bytes, cache_fits, collate_features
from wbc.attributes.head import AttributeHead, FeatureTap, HeadConfig, attribute_classes, probe_channels
from wbc.attributes.metrics import summarize_attributes
from wbc.canonical import prepare
from wbc.device import torch_device
from wbc.inference import load_detector
from wbc.partial_labels import set_matrix
from wbc.paths import new_run_dir, runs_root


def balanced_weights(codes: np.ndarray, value_counts: list[int]) -> list[torch.Tensor]:
    """Per attribute, value weights inversely proportional to frequency (mean 1) over known values.
    codes: (K, A) over the training boxes."""
    weights = []
    for a, n in enumerate(value_counts):
        values = codes[:, a]
        counts = np.bincount(values[(values >= 0) & (values < n)], minlength=n).astype(np.float64)  # label-set codes (>= n) left out
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n, 0.0)
        weights.append(torch.tensor(w / w[counts > 0].mean(), dtype=torch.float32))
    return weights


class DetectorBatches:
    """Batches of (tapped maps, boxes, codes) from an image loader, running the frozen detector per batch."""

    def __init__(self, detector: torch.nn.Module, tap: FeatureTap, loader: DataLoader, device):
        self.detector, self.tap, self.loader, self.device = detector, tap, loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, boxes, codes in self.loader:
            with torch.no_grad():
                self.detector(images.to(self.device))
            yield self.tap.features, boxes, codes


class CachedBatches:
    """Batches of (maps, boxes, codes) from a FieldFeatures cache."""

    def __init__(self, features: FieldFeatures, batch: int, shuffle: bool, device):
        self.loader = DataLoader(features, batch, shuffle=shuffle, num_workers=0, collate_fn=collate_features)
        self.device = device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for maps, boxes, codes in self.loader:
            yield [m.to(self.device, non_blocking=True) for m in maps], boxes, codes


@torch.no_grad()
def predict_codes(head: AttributeHead, batches, input_size: tuple[int, int], device) -> tuple[np.ndarray, np.ndarray]:
    """(true codes, predicted codes) for every ground-truth box of ``batches``."""
    head.eval()
    truth, predicted = [], []
    for maps, boxes, codes in batches:
        logits = head(maps, boxes.to(device), input_size)
        predicted.append(torch.stack([out.argmax(1) for out in logits], 1).cpu().numpy())
        counts = np.array([out.shape[1] for out in logits])
        truth.append(np.where(codes.numpy() >= counts, -1, codes.numpy()))  # a label-set code is scored nowhere
    return np.concatenate(truth), np.concatenate(predicted)


def train_one_epoch(batches, batch_loss, optimizer, scheduler, desc: str) -> tuple[float, float]:
    """One pass over ``batches`` (tuples unpacked into ``batch_loss``), stepping the optimizer and the
    per-step scheduler. Returns (mean loss, seconds)."""
    start, total = time.time(), 0.0
    bar = TQDM(batches, desc=desc, total=len(batches))
    for i, batch in enumerate(bar):
        loss = batch_loss(*batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item()
        bar.set_postfix(loss=f"{total / (i + 1):.4f}")
    return total / len(batches), time.time() - start


def fit_head(head: AttributeHead, train_batches, val_batches, input_size: tuple[int, int], out: Path, epochs: int,
             lr: float = 1e-3, jitter: float = 0.05, class_weights: list[torch.Tensor] | None = None, device="cpu",
             sets: list[torch.Tensor | None] | None = None, record: dict | None = None) -> dict:
    """Train ``head`` on batches of (maps, boxes, codes); keep the best (val mean accuracy) as out/head.pt.
    ``sets``: label-set membership per attribute (:func:`wbc.attributes.head.attribute_loss`).
    ``record``: written into metrics.json beside the scores (how the fields were prepared)."""
    out.mkdir(parents=True, exist_ok=True)
    names = [a["name"] for a in head.config.attributes]
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * len(train_batches))
    best, history = {"mean_accuracy": -1.0}, []
    for epoch in range(epochs):
        head.train()

        def batch_loss(maps, boxes, codes):
            return head.loss(maps, jitter_boxes(boxes, jitter).to(device), input_size, codes.to(device), class_weights, sets)

        train_loss, epoch_s = train_one_epoch(train_batches, batch_loss, optimizer, scheduler, f"head epoch {epoch + 1}/{epochs}")
        scores = summarize_attributes(names, head.config.value_counts, *predict_codes(head, val_batches, input_size, device))
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "epoch_s": round(epoch_s, 2),
                        "val_mean_accuracy": scores["mean_accuracy"], "val_mean_macro_f1": scores["mean_macro_f1"]})
        LOGGER.info(f"head epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f}, val mean accuracy {scores['mean_accuracy']:.4f}, "
                    f"mean macro-F1 {scores['mean_macro_f1']:.4f} ({epoch_s:.1f} s)")
        if scores["mean_accuracy"] > best["mean_accuracy"]:
            best = {**scores, "epoch": epoch + 1}
            head.save(out / "head.pt")
            (out / "metrics.json").write_text(json.dumps({"epoch": epoch + 1, **(record or {}), "val_on_ground_truth_boxes": scores}, indent=2))
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    return {"save_dir": out, "best": best, "best_mean_accuracy": best["mean_accuracy"], "history": history}


def frozen_detector(weights: str, layers: list[int], imgsz: int | None, device) -> tuple[torch.nn.Module, FeatureTap, int, list[int]]:
    """(frozen detector, tap on ``layers``, input size, channels per tapped layer)."""
    detector, _, args = load_detector(weights)
    detector.to(device)
    for p in detector.parameters():
        p.requires_grad_(False)
    imgsz = imgsz or int(args.get("imgsz", 640))
    tap = FeatureTap(detector, layers)
    return detector, tap, imgsz, probe_channels(detector, tap, imgsz)


def scale_factors(weights: str, canonical, imgsz: int) -> dict[str, float] | None:
    """For data of several origins, each field's resize to the network input at the detector's
    training scale (its model card's red-cell diameter over the field's origin's, then the fit of the
    training field size to ``imgsz``), as training and predict.py resize them; None for one origin,
    whose fields are each fitted to the input as the detector's reference source was."""
    from wbc.inference import model_card
    from wbc.rescale import fit_factor
    from wbc.training import training_scale

    if canonical.fields()["origin"].nunique() < 2:
        return None
    card = model_card(weights)
    reference, field_size = card.get("train_rbc_diameter_px"), card.get("train_field_size")
    if not reference or not field_size:
        raise ValueError(f"{weights}: its model card records no training scale (train_rbc_diameter_px, train_field_size); "
                         f"{canonical.spec.name} holds fields of several origins, which must reach the head at one scale")
    factors = training_scale(canonical.root, {"rbc_diameter_px": reference, "field_size": field_size})["factors"]
    fit = fit_factor(imgsz, field_size)
    return {image: f * fit for image, f in factors.items()}


def training_colours(weights: str):
    """The detector's reference colours (a :class:`wbc.colour.ColourReference`), or None where its card has none."""
    from wbc.colour import ColourReference
    from wbc.inference import model_card

    reference = ColourReference.from_card(model_card(weights))
    LOGGER.info(f"fields in the reference colours of {reference.fields} {reference.source} (wbc.colour)" if reference else
                f"{weights}: its model card records no colour reference; fields in their own colours")
    return reference


def train_head(weights: str, data: str, epochs: int = 20, batch: int = 32, imgsz: int | None = None, name: str = "exp",
               config: str | None = None, lr: float = 2e-3, jitter: float = 0.05, balance: bool = False, device: str = "cpu",
               workers: int = 2, project: Path | None = None, data_root: str | None = None, seed: int = 0,
               cache: bool = True, flip: bool = False, augment: bool = False, types: bool = False,
               stain: float = 0.0, copies: int = 1, colour: bool = True) -> dict:
    """``colour``: fields in the detector's reference colours (its model card's ``colour_reference``,
    :mod:`wbc.colour`), as the analyzer hands them to the detector; a card without one leaves them as they are."""
    if flip and augment:
        raise ValueError("flip and augment together: augment already draws mirrored views; give one of them")
    torch.manual_seed(seed)
    canonical = prepare(data, data_root)
    device = torch_device(device)
    cfg = HeadConfig.from_yaml(config)
    detector, tap, imgsz, channels = frozen_detector(weights, cfg.layers, imgsz, device)
    spec = canonical.spec
    if types:  # the type of every WBC-type box, as the head's one attribute
        cfg = replace(cfg, attributes=[{"name": CELL_TYPE, "values": list(spec.wbc_classes)}], classes=list(spec.wbc_classes))
    else:
        cfg = replace(cfg, attributes=[{"name": a.name, "values": list(a.values)} for a in spec.used_attributes], classes=attribute_classes(spec))
    cfg = replace(cfg, imgsz=imgsz, in_channels=channels)
    head = AttributeHead(cfg).to(device)

    typed = list(spec.wbc_classes) if types else None
    factors = scale_factors(weights, canonical, imgsz)
    reference = training_colours(weights) if colour else None
    train = dict(types=typed, stain=stain, copies=copies, seed=seed, factors=factors, colour=reference)
    sources = {"train": [AttributeFields(canonical, "train", imgsz, view=None if augment else 0, **train)],
               "val": [AttributeFields(canonical, "val", imgsz, types=typed, factors=factors, colour=reference)]}
    if flip:
        sources["train"].append(AttributeFields(canonical, "train", imgsz, view=4, **train))
    cached = [s for s in ("train", "val") if cache and not (s == "train" and augment)]  # a random view per epoch cannot be cached
    if cached and not cache_fits(cache_bytes(tap, sum(len(f) for s in cached for f in sources[s]))):
        LOGGER.warning("detector features do not fit in half the available RAM; running the detector every epoch")
        cached = []
    train_batches, val_batches = (
        CachedBatches(ConcatDataset([FieldFeatures(detector, tap, f, batch, device, workers) for f in sources[s]]), batch, s == "train", device)
        if s in cached else
        DetectorBatches(detector, tap, DataLoader(ConcatDataset(sources[s]), batch, shuffle=s == "train", num_workers=workers, collate_fn=collate), device)
        for s in ("train", "val"))
    class_weights = balanced_weights(np.concatenate([c for _, _, c in sources["train"][0].items]), cfg.value_counts) if balance else None
    out = new_run_dir(name, project or runs_root() / "attributes")
    label_sets = sources["train"][0].label_sets
    sets = [set_matrix(label_sets, list(spec.wbc_classes))] if label_sets else None
    if label_sets:
        LOGGER.info(f"type head: boxes of label set(s) {', '.join(f'{k} ({len(v)} types)' for k, v in label_sets.items())} "
                    f"teach 'one of these'")
    result = fit_head(head, train_batches, val_batches, (imgsz, imgsz), out, epochs, lr, jitter, class_weights, device, sets,
                      {"colour_reference": reference.to_card() if reference else None})
    tap.remove()
    return result


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="trained detector (ultralytics checkpoint)")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--config", help="head config yaml (default attribute_head/default.yaml)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--imgsz", type=int, help="default: the detector's training size")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--jitter", type=float, default=0.05, help="box edge jitter, fraction of box size")
    p.add_argument("--balance", action="store_true", help="weight rare values up in the loss")
    p.add_argument("--flip", action="store_true", help="also train on every field mirrored left-right (twice the cache and epoch time)")
    p.add_argument("--augment", action="store_true",
                   help="a random rotation / reflection of every training field each epoch; the detector then runs every epoch on train")
    p.add_argument("--types", action="store_true",
                   help="a type head: predict the WBC type (the dataset's wbc_classes) of each box instead of its attributes")
    p.add_argument("--stain", type=float, default=0.0,
                   help="strength in [0, 1] of the stain / camera / optics transforms (wbc/stain.py) on training fields; "
                        "the detector's own training used 1 (hyps/hyp.multisource.yaml)")
    p.add_argument("--copies", type=int, default=1,
                   help="training copies of every field, each with its own fixed draw of --stain (the cache grows with them)")
    p.add_argument("--no-colour-norm", action="store_true",
                   help="fields in their own colours, not moved to the detector's reference colours as predict.py moves them")
    p.add_argument("--no-cache", action="store_true", help="run the detector every epoch instead of caching its features in RAM")
    p.add_argument("--device", default="cpu", help="cpu, 0 or cuda:0")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    result = train_head(args.weights, args.data, args.epochs, args.batch, args.imgsz, args.name, args.config, args.lr,
                        args.jitter, args.balance, args.device, cache=not args.no_cache, flip=args.flip,
                        augment=args.augment, types=args.types, stain=args.stain, copies=args.copies,
                        colour=not args.no_colour_norm)
    print(f"best val mean accuracy (ground-truth boxes) {result['best_mean_accuracy']:.4f}; head at {result['save_dir'] / 'head.pt'}")


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
