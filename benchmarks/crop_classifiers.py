"""Compare crop-classifier runs (runs/classify/<name>/metrics.json): val accuracy, macro-F1 and
per-class F1 of each run's best epoch, and the accuracy with classes merged into coarser groups
(e.g. PBC's 8-group scheme, in which the published results are given).

    .venv/bin/python benchmarks/crop_classifiers.py pbc_types_imagenet pbc_types_imagenet_vat pbc_types_scratch \\
        --merge NE=BNE,SNE IG=MMY,MY,PMY
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wbc.paths import REPO_ROOT


def merged_accuracy(confusion: np.ndarray, classes: list[str], groups: dict[str, list[str]]) -> float:
    """Accuracy when every class of a group counts as the group (classes in no group stay themselves)."""
    label = {c: next((g for g, members in groups.items() if c in members), c) for c in classes}
    correct = sum(confusion[i, j] for i, a in enumerate(classes) for j, b in enumerate(classes) if label[a] == label[b])
    return float(correct / confusion.sum())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="names under runs/classify/")
    p.add_argument("--merge", nargs="*", default=[], help="GROUP=CLASS,CLASS ... for the merged accuracy")
    args = p.parse_args()
    groups = {g: members.split(",") for g, _, members in (m.partition("=") for m in args.merge)}
    rows, classes = [], None
    for name in args.runs:
        metrics = json.loads((REPO_ROOT / "runs" / "classify" / name / "metrics.json").read_text())
        best, config = metrics["best"], metrics["config"]
        classes = list(best["per_class"])
        merged = merged_accuracy(np.array(best["confusion"]), classes, groups) if groups else None
        rows.append((name, config, best, merged))
    header = ["run", "init", "VAT", "epochs", "imgsz", "val acc", "macro-F1", *(["merged acc"] if groups else []), *classes]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, config, best, merged in rows:
        init = "ImageNet" if config["pretrained"] else "random"
        vat = f"{config['vat_weight']:g} (ξ {config['vat_xi']:g}, ε {config['vat_eps']:g})" if config["vat_weight"] else "no"
        cells = [name, init, vat, f"{best['epoch']}/{config['epochs']}", str(config["imgsz"]), f"{best['accuracy'] * 100:.2f}%",
                 f"{best['macro_f1'] * 100:.2f}", *([f"{merged * 100:.2f}%"] if merged is not None else []),
                 *(f"{best['per_class'][c]['f1']:.3f}" for c in classes)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
