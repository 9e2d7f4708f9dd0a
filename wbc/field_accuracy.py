"""WBC-type accuracy per field, for datasets whose fields carry one labelled WBC (PBC):
the class of the highest-confidence WBC-type detection vs the field's class.

    .venv/bin/python -m wbc.field_accuracy --weights W --data data/pbc_wbcatt.yaml --split val --imgsz 256
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from wbc.canonical import CanonicalDataset, prepare
from wbc.offline import guard_downloads
from wbc.paths import DEFAULT_WEIGHTS

NO_WBC = "(no WBC detected)"


def field_type_accuracy(model, canonical: CanonicalDataset, split: str = "val", imgsz: int = 640, batch: int = 16,
                        device: str = "cpu", conf: float = 0.001) -> dict:
    """Top-1 WBC type per field. ``model``: an ultralytics YOLO. Returns accuracy, per-class recall,
    the confusion counts {true: {predicted: n}} and the number of fields."""
    spec = canonical.spec
    fields = canonical.fields()
    fields = fields[(fields["split"] == split) & (fields["field_class"] != "")]
    if fields.empty:
        raise ValueError(f"{spec.name} {split}: no field carries a field class; field accuracy needs single-WBC fields")
    paths = [str(canonical.root / "images" / split / name) for name in fields["image"]]
    wbc_ids = {spec.names.index(c) for c in spec.wbc_classes}
    predicted = []
    for result in model.predict(paths, imgsz=imgsz, conf=conf, batch=batch, device=device, stream=True, verbose=False):
        classes, scores = result.boxes.cls.tolist(), result.boxes.conf.tolist()
        best = max(((s, int(c)) for s, c in zip(scores, classes) if int(c) in wbc_ids), default=None)
        predicted.append(NO_WBC if best is None else model.names[best[1]])
    truth = list(fields["field_class"])
    confusion: dict[str, Counter] = {}
    for t, p in zip(truth, predicted):
        confusion.setdefault(t, Counter())[p] += 1
    correct = sum(t == p for t, p in zip(truth, predicted))
    return {
        "split": split, "fields": len(truth), "accuracy": correct / len(truth),
        "no_wbc_detected": predicted.count(NO_WBC),
        "recall_per_class": {c: confusion[c][c] / sum(confusion[c].values()) for c in sorted(confusion)},
        "confusion": {t: dict(sorted(c.items())) for t, c in sorted(confusion.items())},
    }


def main(argv=None):
    from ultralytics import YOLO

    from wbc.paths import REPO_ROOT, new_run_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="detector checkpoint (default: the shipped model)")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--data-root")
    p.add_argument("--split", default="val")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    guard_downloads()
    canonical = prepare(args.data, args.data_root)
    result = field_type_accuracy(YOLO(args.weights), canonical, args.split, args.imgsz, args.batch, args.device)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "field_accuracy")
    out.mkdir(parents=True)
    (out / "field_accuracy.json").write_text(json.dumps(result, indent=2))
    print(f"WBC-type accuracy per field ({args.split}, {result['fields']} fields): {result['accuracy']:.4f}")
    for c, r in result["recall_per_class"].items():
        print(f"  {c:<6} recall {r:.3f}   predicted as: {result['confusion'][c]}")
    print(f"written to {out / 'field_accuracy.json'}")


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
