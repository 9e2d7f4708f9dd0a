"""What leaves the review app: the signed-out differentials of approved smears (CSV and HTML, with
who approved them and when), and the reviewed cells as a training dataset (COCO with attributes,
the project's own exporter, plus its dataset yaml, which ``check.py`` reads, and a ``train.yaml``
that ``train.py`` fine-tunes on)."""

from __future__ import annotations

import csv
import html
import json
import time
from pathlib import Path

import yaml

from wbc.app.store import NOT_A_CELL, UNIDENTIFIED, Store
from wbc.differential import differential_table
from wbc.formats import write_dataset
from wbc.schema import Attribute, Box, Dataset, DatasetSpec, Field

REVIEW_ATTRIBUTE = Attribute("review", ("accepted", "corrected", "added"))  # how each exported box came to its label


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def signed_out(store: Store, run_id: int, out: Path) -> dict[str, Path]:
    """``differential.csv`` (one row per approved smear and bin) and ``differential.html`` of the approved smears."""
    out.mkdir(parents=True, exist_ok=True)
    approved = [s for s in store.smears(run_id) if s["approved_at"] is not None]
    rows, sections = [], []
    for s in approved:
        diff = json.loads(s["approved_differential"])
        for b, v in diff["per_class"].items():
            rows.append({"image": s["image"], "bin": b, "count": v["count"], "percent": round(v["percent"], 2), "wbc": diff["wbc"],
                         "approved_by": s["approved_by"], "approved_at": _when(s["approved_at"])})
        for b, v in diff["nrbc"].items():
            rows.append({"image": s["image"], "bin": f"{b} (per 100 WBC)", "count": v["count"], "percent": round(v["per_100_wbc"], 2),
                         "wbc": diff["wbc"], "approved_by": s["approved_by"], "approved_at": _when(s["approved_at"])})
        sections.append(f"<h2>{html.escape(s['image'])}</h2><p>approved by {html.escape(s['approved_by'])} at "
                        f"{_when(s['approved_at'])}</p><pre>{html.escape(differential_table(diff))}</pre>")
    csv_path, html_path = out / "differential.csv", out / "differential.html"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "bin", "count", "percent", "wbc", "approved_by", "approved_at"])
        writer.writeheader()
        writer.writerows(rows)
    run = store.run(run_id)
    html_path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Signed-out differentials: {html.escape(run['name'])}"
                         f"</title></head><body><h1>Signed-out differentials: {html.escape(run['name'])}</h1>"
                         f"<p>{len(approved)} approved smears; exported {_when(time.time())}.</p>{''.join(sections)}</body></html>",
                         encoding="utf-8")
    return {"csv": csv_path, "html": html_path}


def corrections_dataset(store: Store, run_id: int, out: Path, approved_only: bool = True, val_every: int = 5) -> dict:
    """The reviewed cells of a run as a dataset under ``out`` (images copied): ``dataset.yaml``, COCO
    with every cell, marked by the ``review`` attribute (accepted as predicted, corrected, or added by
    the reviewer), and ``train.yaml``, the dataset to fine-tune on (format merge, wbc/formats/merge.py).
    Cells labelled "not a cell" are left out (background, counted). A cell still "unidentified" at
    approval is a WBC of unknown type: it is kept, as the label set "unidentified" of ``train.yaml``
    ("some WBC type", wbc/partial_labels.py), so that fine-tuning keeps finding such cells instead of
    learning them as background, and never learns a type for them. Every ``val_every``-th smear goes
    to val (at least one where there are two or more), the rest to train. Classes keep the model's
    order, and both yamls record the model's training scale (``training_scale``: from the run's
    summary), so that ``train.py`` fine-tunes the model on the fields at the scale it analyses them."""
    run = store.run(run_id)
    classes = [label for label in store.labels(run_id) if label not in (UNIDENTIFIED, NOT_A_CELL)]
    wbc = [c for c in json.loads(run["wbc_classes"]) if c in classes]
    nrbc = [c for c in json.loads(run["nrbc_classes"]) if c in wbc]
    names = [*classes, UNIDENTIFIED]
    index = {c: i for i, c in enumerate(names)}
    corrected = {r["cell_id"] for r in store.corrections(run_id) if not r["undone"]}
    smears = [s for s in store.smears(run_id) if s["approved_at"] is not None or not approved_only]
    if not smears:
        raise ValueError(f"run {run['name']}: no approved smear to export (approve smears first, or export unapproved ones)")
    splits: dict[str, list[Field]] = {"train": [], "val": []}
    counts = {UNIDENTIFIED: 0, NOT_A_CELL: 0}
    for i, s in enumerate(smears):
        boxes = []
        for c in store.cells(run_id, smear_id=s["id"]):
            if c["label"] in counts:
                counts[c["label"]] += 1
            if c["label"] == NOT_A_CELL:
                continue
            how = 2 if c["added"] else 1 if c["id"] in corrected else 0
            boxes.append(Box(index[c["label"]], (c["x1"], c["y1"], c["x2"], c["y2"]), (how,)))
        split = "val" if len(smears) > 1 and (i % val_every == val_every - 1 or (i == len(smears) - 1 and not splits["val"])) else "train"
        splits[split].append(Field(Path(s["path"]), s["width"], s["height"], boxes))
    summary = json.loads(run["summary"])
    scale = ({"rbc_diameter_px": summary["train_rbc_diameter_px"], "field_size": summary["train_field_size"]}
             if summary.get("train_rbc_diameter_px") and summary.get("train_field_size") else None)
    spec = DatasetSpec(f"{run['name']}_reviewed", out / "dataset.yaml", out, "coco", names, {k: k for k in splits if splits[k]},
                       [REVIEW_ATTRIBUTE], {}, [*wbc, UNIDENTIFIED], nrbc, origins=run["name"], training_scale=scale)
    yaml_path = write_dataset(Dataset(spec, {k: v for k, v in splits.items() if v}), out, "coco", copy_images=True)
    train_yaml = out / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({
        "name": f"{run['name']}_reviewed_train", "format": "merge", "names": classes, "wbc_classes": wbc, "nrbc_classes": nrbc,
        "label_sets": {UNIDENTIFIED: [c for c in wbc if c not in nrbc]}, **({"training_scale": scale} if scale else {}),
        "parts": [{"data": yaml_path.name}]}, sort_keys=False))
    return {"yaml": yaml_path, "train_yaml": train_yaml, "smears": len(smears), "boxes": sum(len(f.boxes) for v in splits.values() for f in v),
            "unidentified": counts[UNIDENTIFIED], "skipped": {NOT_A_CELL: counts[NOT_A_CELL]}}
