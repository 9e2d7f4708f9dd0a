"""Evaluate a finished training run and write the shipped weights with their model card.

    .venv/bin/python -m wbc.model_card --run runs/train/pbc/phase1 --data data/pbc_wbcatt.yaml --out weights/wbc_pbc_yolov5n_352
    .venv/bin/python -m wbc.model_card --weights weights/wbc_pbc_yolov5n_352.pt --head new.attributes.pt ...   # re-card shipped weights

Copies the run's best.pt (or ``--weights``) to ``<out>.pt`` and writes ``<out>.md``: data, command, epochs, image
size, machine, wall time, per-class val P/R/mAP50/mAP50-95 and, for single-WBC fields, the
WBC-type accuracy per field. The numbers come from a fresh validation of the copied weights.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import yaml

from wbc.canonical import prepare
from wbc.evaluation.detection import validate
from wbc.field_accuracy import field_accuracy_of_predictions, has_field_classes
from wbc.offline import guard_downloads
from wbc.paths import REPO_ROOT
from wbc.training import TRANSFER_RECORD


def evaluate(weights: Path, canonical, split: str, imgsz: int, batch: int = 16, device: str = "cpu") -> dict:
    """Detection metrics and (single-WBC fields) the WBC type per field, as ``test.py`` computes them."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics, predictions = validate(weights, canonical, split, imgsz, batch, 0.7, device, Path(tmp), plots=False)
    per_class = {c: {k: m[k] for k in ("P", "R", "mAP50", "mAP50-95")} for c, m in metrics["per_class"].items()}
    result = {"split": split, "imgsz": imgsz, "mAP50": metrics["mAP50"], "mAP50-95": metrics["mAP50-95"], "per_class": per_class}
    if has_field_classes(canonical, split):
        result["field_accuracy"] = field_accuracy_of_predictions(canonical, split, predictions)
    return result


def run_summary(run: Path) -> dict:
    args = yaml.safe_load((run / "args.yaml").read_text())
    rows = list(csv.DictReader((run / "results.csv").open()))
    best = run / "weights" / "best.pt"
    return {"epochs": len(rows), "train_seconds": float(rows[-1]["time"]), "args": args, "run": run,
            "architecture": architecture_of(_load(best)) if best.is_file() else None}


def _load(weights: Path) -> dict:
    from ultralytics.nn.tasks import torch_safe_load

    return torch_safe_load(weights, safe_only=True)[0]


def architecture_of(ckpt: dict) -> str | None:
    """The model config an ultralytics checkpoint was built from (``yolov5n``), not the file it was fine-tuned from."""
    model = ckpt.get("ema") or ckpt.get("model")
    return Path(model.yaml.get("yaml_file", "")).stem if model is not None else None


def checkpoint_summary(weights: Path) -> dict:
    """The same summary from the training arguments and results an ultralytics checkpoint carries."""
    ckpt = _load(weights)
    results = ckpt.get("train_results") or {}
    if not ckpt.get("train_args") or not results.get("epoch"):
        raise ValueError(f"{weights}: the checkpoint carries no training arguments and results; pass --run")
    return {"epochs": len(results["epoch"]), "train_seconds": float(results["time"][-1]), "args": ckpt["train_args"],
            "architecture": architecture_of(ckpt),
            "run": weights.parent.parent if weights.parent.name == "weights" else None}  # runs/train/<name>/phaseN/weights/best.pt


def initial_weights(args: dict, run: Path | None = None) -> str:
    """What a run started from: the checkpoint it fine-tuned, the weights transferred into its config
    (the phase directory ``run`` records an original YOLOv5 checkpoint's transfer), or nothing."""
    if str(args["model"]).endswith(".pt"):
        model = Path(args["model"])
        return str(model.relative_to(REPO_ROOT) if model.is_relative_to(REPO_ROOT) else model)
    if isinstance(args.get("pretrained"), str):
        return args["pretrained"]
    if run is not None and (run / TRANSFER_RECORD).is_file():
        transfer = json.loads((run / TRANSFER_RECORD).read_text())
        return (f"{Path(transfer['source']).name} (original YOLOv5 checkpoint; {transfer['tensors'][0]} of "
                f"{transfer['tensors'][1]} tensors, backbone + neck, transferred)")
    return f"none recorded: built from {Path(str(args['model'])).name}"


def training_rbc_diameter(canonical) -> tuple[str, float | None]:
    """(reference origin, its red-cell diameter in px as the estimator finds it on train fields): the
    scale inference brings every field to; the same reference and number as training
    (wbc.training.training_scale)."""
    from wbc.rescale import origin_rbc_diameters, reference_origin

    reference = reference_origin(canonical.fields())
    return reference, origin_rbc_diameters(canonical.root).get(reference)


def per_origin_section(metrics: dict) -> str:
    """AP per class and origin from a ``test.py`` metrics.json (validator, conf 0.001) or a
    ``benchmarks/predict_by_origin.py`` one (predict.py's cells), with the command's settings."""
    from wbc.evaluation.report import origin_table

    settings = metrics.get("settings", {})
    if "per_origin" in metrics:  # predict_by_origin
        rows = {**metrics["per_origin"], "all": {"images": sum(m["images"] for m in metrics["per_origin"].values()), **metrics["pooled"]}}
        how = f"through `predict.py` (conf {settings.get('conf')}, its rescaling and tiling), `{settings.get('data')}` {settings.get('split')}"
    else:
        detection = metrics["detection"]
        rows = {**detection.get("per_origin", {}), "all": {"images": metrics["images"], **detection["cocoeval"]}}
        how = f"`test.py` validator (conf 0.001), `{settings.get('data')}` {settings.get('split')}"
    return f"{how}; COCOeval.\n\n" + origin_table(rows).split("\n\n", 1)[1]


def write_card(out: Path, data: str, command: str, result: dict, summary: dict, machine: str, head_note: str = "",
               wbc_classes: list[str] | None = None, history: str = "", nrbc_classes: list[str] | None = None,
               train_field_size: int | None = None, train_rbc_diameter_px: float | None = None,
               evaluations: dict[str, dict] | None = None, limits: str | None = None, train_data: str | None = None,
               sections: dict[str, str] | None = None, colour_reference: dict | None = None) -> None:
    weights = out.with_suffix(".pt")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    a = summary["args"]
    architecture = summary.get("architecture") or Path(a["model"]).stem
    budget = f" (ultralytics `time` budget: {a['time']} h)" if a.get("time") else ""
    lines = [
        f"# {weights.name}", "",
        f"WBC detector ({architecture}, ultralytics v5u architecture) trained on `{train_data or data}`.", "",
        "| | |", "|---|---|",
        f"| file | `{weights.name}` ({weights.stat().st_size / 1e6:.1f} MB, sha256 `{sha[:16]}…`) |",
        f"| classes | {', '.join(result['per_class'])} |",
        f"| data | `{train_data or data}` train split (canonical import, see README), validated on `{data}` {result['split']} |",
        f"| initial weights | `{initial_weights(a, summary.get('run'))}` |",
        *([f"| history | {history} |"] if history else []),
        f"| command | `{command}` |",
        f"| epochs | {summary['epochs']}{budget} |",
        f"| image size | {a['imgsz']} px, batch {a['batch']}, optimizer {a['optimizer']} |",
        *([f"| training scale | red cells {train_rbc_diameter_px:.1f} px across (the estimator's median on the train fields), fields "
           f"{train_field_size} px: `predict.py` / `test.py` resize every field to it |"] if train_rbc_diameter_px else []),
        f"| machine | {machine} |",
        f"| wall time | {summary['train_seconds'] / 3600:.2f} h of training |", "",
        f"## Validation ({result['split']}, {result['imgsz']} px)", "",
        f"All classes: mAP50 **{result['mAP50']:.3f}**, mAP50-95 **{result['mAP50-95']:.3f}**.", "",
        "| class | P | R | mAP50 | mAP50-95 |", "|---|---|---|---|---|",
    ]
    lines += [f"| {c} | {m['P']:.3f} | {m['R']:.3f} | {m['mAP50']:.3f} | {m['mAP50-95']:.3f} |" for c, m in result["per_class"].items()]
    attrs = result.get("attributes")
    if attrs:
        lines += ["", f"## Attributes from predicted boxes ({attrs['split']}, IoU >= {attrs['match_iou']})", "",
                  f"Attribute head `{weights.stem}.attributes.pt` ({head_note}). {attrs['ground_truth_boxes_with_attributes']} ground-truth "
                  f"boxes with known attributes, {attrs['matched']} matched one-to-one to predicted boxes (any class), {attrs['missed']} missed.", "",
                  "| attribute | boxes | accuracy | macro-F1 |", "|---|---|---|---|"]
        lines += [f"| {n} | {s['known']} | {s['accuracy'] * 100:.2f}% | {s['macro_f1'] * 100:.2f} |" for n, s in attrs["per_attribute"].items()]
        lines += [f"| **mean** | | **{attrs['mean_accuracy'] * 100:.2f}%** | **{attrs['mean_macro_f1'] * 100:.2f}** |"]
    fa = result.get("field_accuracy")
    if fa:
        lines += ["", f"## WBC type per field ({fa['split']}, {fa['fields']} fields)", "",
                  "The class of the highest-confidence WBC-type detection against the field's expert label.", "",
                  f"Top-1 accuracy **{fa['accuracy'] * 100:.2f}%**; fields with no WBC detected: {fa['no_wbc_detected']}.", "",
                  "| field class | recall | predicted as |", "|---|---|---|"]
        lines += [f"| {c} | {r:.3f} | {', '.join(f'{k} {v}' for k, v in fa['confusion'][c].items())} |" for c, r in fa["recall_per_class"].items()]
    for title, metrics in (evaluations or {}).items():
        lines += ["", f"## {title}", "", per_origin_section(metrics)]
    for title, text in (sections or {}).items():
        lines += ["", f"## {title}", "", text.strip()]
    lines += ["", "## Limits", "", limits or (
              "Trained on PBC fields (CellaVision DM96, one centred WBC per field, 360×363 px): expect lower accuracy on other "
              "scanners, stains and magnifications, and on fields with several or overlapping WBCs. Not a medical device.")]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    # wbc_classes: which of the model's classes are WBC types, nrbc_classes: which of those are nucleated red cells
    # (predict.py's differential count reads both); train_field_size: median longest side of the training images
    # (predict.py's default tile); train_rbc_diameter_px: the red-cell diameter inference resizes every field to (wbc.rescale);
    # colour_reference: the CIELAB statistics inference moves every field's colours to (wbc.colour)
    out.with_suffix(".json").write_text(json.dumps({"result": result, "epochs": summary["epochs"], "train_seconds": summary["train_seconds"],
                                                    "wbc_classes": wbc_classes, "nrbc_classes": nrbc_classes or [],
                                                    "train_field_size": train_field_size, "train_rbc_diameter_px": train_rbc_diameter_px,
                                                    **({"colour_reference": colour_reference} if colour_reference else {})},
                                                   indent=2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a finished phase directory (runs/train/<name>/phaseN)")
    source.add_argument("--weights", type=Path, help="a finished ultralytics checkpoint (its training summary is read from it)")
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True, help="output path without suffix, e.g. weights/wbc_multisource_yolov5n_352")
    p.add_argument("--command", required=True, help="the train.py command that made the run, for the card")
    p.add_argument("--split", default="val")
    p.add_argument("--head", type=Path, help="attribute head to ship with the weights (evaluated from predicted boxes)")
    p.add_argument("--head-command", default="", help="the command that trained the head, for the card")
    p.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU")
    p.add_argument("--history", default="", help="how the initial weights were made, for a fine-tuned model's card")
    p.add_argument("--evaluation", nargs=2, action="append", default=[], metavar=("TITLE", "METRICS_JSON"),
                   help="a section of per-origin AP from a test.py or benchmarks/predict_by_origin.py metrics.json (repeatable)")
    p.add_argument("--section", nargs=2, action="append", default=[], metavar=("TITLE", "MARKDOWN_FILE"),
                   help="a section written by hand (e.g. leave-one-source-out results), placed before Limits (repeatable)")
    p.add_argument("--train-data", help="the dataset yaml the model was trained on, when not --data (e.g. a merged one)")
    p.add_argument("--limits", help="the card's Limits paragraph (default: the PBC-only text)")
    args = p.parse_args(argv)
    guard_downloads()
    weights = args.weights or args.run / "weights" / "best.pt"
    summary = checkpoint_summary(weights) if args.weights else run_summary(args.run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if weights.resolve() != args.out.with_suffix(".pt").resolve():
        shutil.copy2(weights, args.out.with_suffix(".pt"))
    canonical = prepare(args.data)
    result = evaluate(args.out.with_suffix(".pt"), canonical, args.split, summary["args"]["imgsz"])
    if args.head:
        from wbc.attributes.head import head_path_for
        from wbc.evaluation.cells import attribute_metrics, collect
        from wbc.inference import WBCAnalyzer

        if args.head.resolve() != head_path_for(args.out.with_suffix(".pt")).resolve():
            shutil.copy2(args.head, head_path_for(args.out.with_suffix(".pt")))
        analyzer = WBCAnalyzer(args.out.with_suffix(".pt"))
        cells = collect(analyzer, canonical, args.split)
        result["attributes"] = {"split": args.split, "match_iou": 0.5,
                                **attribute_metrics(cells, cells.matches(0.5), analyzer.attribute_specs)}
    from wbc.colour import reference_of
    from wbc.inference import model_card

    fields = canonical.fields()
    reference, rbc_diameter = training_rbc_diameter(canonical)
    train = fields[(fields["split"] == "train") & (fields["origin"] == reference)]
    field_size = int(train[["width", "height"]].max(axis=1).median()) if len(train) else None
    write_card(args.out, args.data, args.command, result, summary, args.machine, args.head_command, canonical.spec.wbc_classes, args.history,
               canonical.spec.nrbc_classes, field_size, rbc_diameter,
               {title: json.loads(Path(path).read_text()) for title, path in args.evaluation}, args.limits, args.train_data,
               {title: Path(path).read_text() for title, path in args.section},
               model_card(weights).get("colour_reference") or reference_of(canonical.root, reference).to_card())
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
