"""Does reviewing a lab's own cells in the review app, then fine-tuning on the export, help? (BCCD)

    .venv/bin/python benchmarks/review_loop.py --cells 50 100 200 --name bccd

BCCD train stands in for a lab's smears and its WBC subtype table for the technologist: predict.py
runs on the BCCD train fields, the run goes into the review app's store (:mod:`wbc.app.store`), and a
scripted reviewer goes through the smears in order until N WBCs are reviewed: each detected WBC-type
cell that matches a true WBC (IoU >= 0.5) gets the true type (BCCD's NEUTROPHIL as SNE, its other
subtypes as EO / LY / MO / BA), a missed WBC is boxed and typed, a WBC-type detection on a red cell or
platelet is relabelled as such and one on nothing as "not a cell"; each smear is approved. Smears with
a WBC of unknown subtype are passed over. The export (:mod:`wbc.app.export`, at the model's training
scale) fine-tunes the default detector (phase 2, ``hyps/hyp.finetune.yaml``, a fixed budget of
field passes), and before / after are scored through predict.py on BCCD val: WBC AP50 (model classes
mapped by data/class_maps/pbc_to_bccd.yaml) and the subtype accuracy of detected true WBCs; and on
PBC val, the type accuracy of detected true WBCs (what the fine-tuning may cost the source it was
trained on). ``--replay N`` also fine-tunes on the export plus N PBC train fields (the same epochs).

    .venv/bin/python benchmarks/review_loop.py --lab raabin --cells 300 --replay 200 --name raabin

``--lab raabin``: TXL-PBC's Raabin-WBC train fields instead, for detection (their WBCs carry no type:
a found WBC is confirmed as called, a missed one boxed as "unidentified"), scored by the WBC AP50 of
the Raabin-WBC val fields through predict.py. Writes ``runs/benchmarks/review_loop/<name>/``
(``results.json``, ``results.md``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from wbc.app.export import corrections_dataset  # noqa: E402
from wbc.app.store import NOT_A_CELL, Store  # noqa: E402
from wbc.attributes.metrics import match_boxes  # noqa: E402
from wbc.canonical import prepare  # noqa: E402
from wbc.evaluation import coco  # noqa: E402
from wbc.evaluation.through_predict import predict_split, score_cells  # noqa: E402
from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir  # noqa: E402

SUBTYPE = {"NEUTROPHIL": "SNE", "EOSINOPHIL": "EO", "LYMPHOCYTE": "LY", "MONOCYTE": "MO", "BASOPHIL": "BA"}
UNTYPED = "WBC of unknown type"  # TXL-PBC's WBC boxes: the scripted reviewer confirms the cell, not its type
RAABIN = "Raabin-WBC"
GROUP = {"BNE": "NEUTROPHIL", "SNE": "NEUTROPHIL", "EO": "EOSINOPHIL", "LY": "LYMPHOCYTE", "MO": "MONOCYTE", "BA": "BASOPHIL"}
BOX = ["x1", "y1", "x2", "y2"]


def truth_of(canonical, split: str) -> dict:
    """{image: [(class or subtype-typed class, box)]} with WBCs typed by the subtype attribute (None: unknown)."""
    spec = canonical.spec
    values = next(a.values for a in spec.used_attributes if a.name == "wbc_subtype")
    boxes = canonical.attributes()
    boxes = boxes[boxes["split"] == split]
    out = {}
    for image, rows in boxes.groupby("image"):
        out[image] = [((SUBTYPE[values[int(r["wbc_subtype"])]] if r["wbc_subtype"] >= 0 else None) if r["class"] == "WBC"
                       else {"Platelets": "PLT"}.get(r["class"], r["class"]), r[BOX].to_numpy(float)) for _, r in rows.iterrows()]
    return out


def txl_truth(canonical, split: str) -> dict:
    """{image: [(class, box)]} of TXL-PBC: WBC boxes untyped, Platelet as PLT."""
    boxes = canonical.attributes()
    boxes = boxes[boxes["split"] == split]
    names = {"WBC": UNTYPED, "Platelet": "PLT"}
    return {image: [(names.get(r["class"], r["class"]), r[BOX].to_numpy(float)) for _, r in rows.iterrows()]
            for image, rows in boxes.groupby("image")}


def review(store: Store, run_id: int, truth: dict, cells: int) -> dict:
    """The scripted technologist; returns what it did. A WBC of unknown type (TXL-PBC) is confirmed as a
    cell where it was found (its type left as called) and boxed as "unidentified" where it was missed."""
    wbc = set(json.loads(store.run(run_id)["wbc_classes"])) | {"unidentified"}
    done = {"smears": 0, "wbc": 0, "relabelled": 0, "accepted": 0, "added": 0, "not_a_cell": 0, "passed_over": 0}
    for smear in store.smears(run_id):
        if done["wbc"] >= cells:
            break
        rows = truth.get(smear["image"], [])
        if any(cls is None for cls, _ in rows):
            done["passed_over"] += 1
            continue
        found = [c for c in store.cells(run_id, smear_id=smear["id"]) if c["label"] in wbc]
        gt_wbc = [(cls, box) for cls, box in rows if cls in SUBTYPE.values() or cls == UNTYPED]
        others = [(cls, box) for cls, box in rows if cls not in SUBTYPE.values() and cls != UNTYPED]
        pred = np.array([[c[k] for k in BOX] for c in found], float).reshape(-1, 4)
        pairs = match_boxes(np.array([b for _, b in gt_wbc], float).reshape(-1, 4), pred, 0.5)
        matched = {p for _, p, _ in pairs}
        for g, p, _ in pairs:
            changed = store.relabel([found[p]["id"]], gt_wbc[g][0], "benchmark") if gt_wbc[g][0] != UNTYPED else []
            done["relabelled" if changed else "accepted"] += 1
        for g in sorted(set(range(len(gt_wbc))) - {g for g, _, _ in pairs}):
            store.add_cell(smear["id"], tuple(gt_wbc[g][1]), "unidentified" if gt_wbc[g][0] == UNTYPED else gt_wbc[g][0], "benchmark")
            done["added"] += 1
        rest = [i for i in range(len(found)) if i not in matched]
        other_pairs = match_boxes(np.array([b for _, b in others], float).reshape(-1, 4), pred[rest], 0.5) if rest else []
        relabelled = {rest[p] for _, p, _ in other_pairs}
        for g, p, _ in other_pairs:
            store.relabel([found[rest[p]]["id"]], others[g][0], "benchmark")
        for i in rest:
            if i not in relabelled:
                store.relabel([found[i]["id"]], NOT_A_CELL, "benchmark")
                done["not_a_cell"] += 1
        store.approve(smear["id"], "benchmark")
        done["smears"] += 1
        done["wbc"] += len(gt_wbc)
    return done


def subtype_accuracy(cells_json: Path, truth: dict, group: dict[str, str]) -> dict:
    """Of the true WBCs of known type that a WBC-type cell matches (IoU >= 0.5): the share whose class
    (grouped by ``group``; ungrouped classes as they are) is the true type."""
    right = total = 0
    for f in json.loads(cells_json.read_text()):
        rows = [(cls, b) for cls, b in truth.get(f["image"], []) if cls is not None]
        gt = [(cls, b) for cls, b in rows if cls in group.values()]
        cells = [c for c in f["cells"] if c["class"] in group or c["class"] in ("ERB", "MMY", "MY", "PMY")]
        pred = np.array([[c[k] for k in BOX] for c in cells], float).reshape(-1, 4)
        for g, p, _ in match_boxes(np.array([b for _, b in gt], float).reshape(-1, 4), pred, 0.5):
            total += 1
            right += group.get(cells[p]["class"], cells[p]["class"]) == gt[g][0]
    return {"cells": total, "accuracy": right / total if total else float("nan")}


def pbc_truth(canonical, split: str) -> dict:
    boxes = canonical.attributes()
    boxes = boxes[(boxes["split"] == split) & boxes["class"].isin(canonical.spec.wbc_classes)]
    return {image: [(r["class"], r[BOX].to_numpy(float)) for _, r in rows.iterrows()] for image, rows in boxes.groupby("image")}


def score_raabin(weights: Path, out: Path, txl, pbc, pbc_truth_: dict, class_map: dict) -> dict:
    """TXL-PBC val Raabin-WBC fields: WBC AP50 through predict.py; PBC val type accuracy."""
    _, cells_json, fields = predict_split(txl, "val", out / "txl_val", weights, origin=RAABIN)
    ap = score_cells(cells_json, coco.ground_truth(txl, "val"), class_map, dict(zip(fields["image"], fields["origin"])))
    _, pbc_json, _ = predict_split(pbc, "val", out / "pbc_val", weights)
    return {"raabin_wbc_ap50": ap["per_origin"][RAABIN]["per_class"]["WBC"]["mAP50"],
            "pbc_type": subtype_accuracy(pbc_json, pbc_truth_, {c: c for c in pbc.spec.wbc_classes})}


def score(weights: Path, out: Path, bccd, bccd_truth: dict, pbc, pbc_truth_: dict, class_map: dict) -> dict:
    _, cells_json, fields = predict_split(bccd, "val", out / "bccd_val", weights)
    ap = score_cells(cells_json, coco.ground_truth(bccd, "val"), class_map, dict(zip(fields["image"], fields["origin"])))
    bccd_group = {c: SUBTYPE[g] for c, g in GROUP.items()}  # BNE and SNE both -> SNE: BCCD's NEUTROPHIL is band or segmented
    _, pbc_json, _ = predict_split(pbc, "val", out / "pbc_val", weights)
    pbc_classes = {c: c for c in pbc.spec.wbc_classes}
    return {"bccd_wbc_ap50": ap["pooled"]["per_class"]["WBC"]["mAP50"],
            "bccd_subtype": subtype_accuracy(cells_json, bccd_truth, bccd_group),
            "pbc_type": subtype_accuracy(pbc_json, pbc_truth_, pbc_classes)}


def replay_yaml(export_yaml: Path, fields: int, out: Path) -> Path:
    """A merged dataset: the review export and ``fields`` PBC train fields (and 100 PBC val fields), at the export's training scale."""
    train = yaml.safe_load((Path(export_yaml).parent / "train.yaml").read_text())  # the export's own training yaml, one more part
    doc = {**train, "name": f"{train['name']}_replay",
           "parts": [{"data": str(Path(export_yaml).resolve())},
                     {"data": str(REPO_ROOT / "data" / "pbc_wbcatt.yaml"), "max_fields": {"train": fields, "val": 100}}]}
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def fine_tune(args, train, exported: dict, n: int, out: Path, scorer) -> dict[str, dict]:
    """Fine-tune the model on the export (and with ``--replay``, on the export plus PBC train fields) with
    ``--passes`` field passes of the export; ``scorer(weights, folder)`` scores each. {variant: {epochs, after, seconds}}."""
    epochs = max(1, round(args.passes / exported["smears"]))
    variants = {str(n): exported["train_yaml"]}
    if args.replay:
        variants[f"{n}+{args.replay} PBC"] = replay_yaml(exported["yaml"], args.replay, out / f"replay_{n}.yaml")
    runs = {}
    for key, data in variants.items():
        start = time.time()
        tag = key.replace(" ", "_").replace("+", "_")
        result = train(str(data), args.weights, [2], [epochs], ["finetune"], f"ft_{tag}", imgsz=352, batch=args.batch,
                       project=out / "train", workers=0, extra={"plots": False, "val": False})
        best = result[-1].save_dir / "weights" / "last.pt"
        shutil.copy(Path(args.weights).with_suffix(".json"), best.with_suffix(".json"))  # the base model's card: its training scale
        runs[key] = {"epochs": epochs, "after": scorer(best, out / f"after_{tag}"), "seconds": time.time() - start}
    return runs


def review_and_fine_tune(args, train, out: Path, run_dir: Path, truth: dict, scorer, results: dict) -> None:
    """For each ``--cells`` N: review N WBCs of the predict run in a fresh store, export, fine-tune and
    score (:func:`fine_tune`); each variant's result goes into ``results['runs']`` (and results.json) as it lands."""
    for n in args.cells:
        store = Store(out / f"review_{n}.sqlite")
        run_id = store.import_run(run_dir)
        did = review(store, run_id, truth, n)
        exported = corrections_dataset(store, run_id, out / f"export_{n}")
        for key, r in fine_tune(args, train, exported, n, out, scorer).items():
            results["runs"][key] = {"review": did, "export": {k: str(v) if isinstance(v, Path) else v for k, v in exported.items()}, **r}
            print(key, json.dumps(results["runs"][key]), flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))


def raabin(args, train) -> None:
    """The loop on TXL-PBC's Raabin-WBC fields (detection only: their WBCs carry no type)."""
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "review_loop")
    out.mkdir(parents=True)
    txl, pbc = prepare(REPO_ROOT / "data" / "txl_pbc.yaml"), prepare(REPO_ROOT / "data" / "pbc_wbcatt.yaml")
    class_map = yaml.safe_load((REPO_ROOT / "data" / "class_maps" / "pbc_to_txl.yaml").read_text())
    truth, pbc_val = txl_truth(txl, "train"), pbc_truth(pbc, "val")
    predict_split(txl, "train", out / "raabin_train", args.weights, origin=RAABIN)
    results = {"settings": vars(args), "before": score_raabin(Path(args.weights), out / "before", txl, pbc, pbc_val, class_map), "runs": {}}
    print("before", json.dumps(results["before"]), flush=True)
    scorer = lambda weights, folder: score_raabin(weights, folder, txl, pbc, pbc_val, class_map)  # noqa: E731
    review_and_fine_tune(args, train, out, out / "raabin_train" / "predict", truth, scorer, results)
    write_table(out, results, {"Raabin-WBC val WBC AP50": lambda m: f"{m['raabin_wbc_ap50']:.3f}",
                               "PBC val type accuracy": lambda m: f"{100 * m['pbc_type']['accuracy']:.1f}%"})


def write_table(out: Path, results: dict, columns: dict) -> None:
    """results.md: the default model, then one row per fine-tuned variant; ``columns``: header -> metrics -> cell."""
    lines = ["| reviewed WBCs | smears | corrections | fine-tuned on | " + " | ".join(columns) + " |", "|---|---|---|---|" + "---|" * len(columns),
             "| 0 (the default model) | | | | " + " | ".join(f(results["before"]) for f in columns.values()) + " |"]
    for key, r in results["runs"].items():
        d = r["review"]
        lines.append(f"| {d['wbc']} | {d['smears']} | {d['relabelled']} relabelled, {d['accepted']} accepted, {d['added']} added, "
                     f"{d['not_a_cell']} not a cell | {'export + PBC replay' if '+' in key else 'export'}, {r['epochs']} epochs, "
                     f"{r['seconds'] / 60:.0f} min | " + " | ".join(f(r["after"]) for f in columns.values()) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--cells", nargs="+", type=int, default=[50, 100, 200])
    p.add_argument("--passes", type=int, default=600, help="field passes of fine-tuning per run (epochs = passes / train fields)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--replay", type=int, default=0, help="also fine-tune with this many PBC train fields mixed in (a merged "
                   "dataset, wbc/formats/merge.py), as many epochs as without")
    p.add_argument("--lab", choices=["bccd", "raabin"], default="bccd", help="whose fields stand in for the lab's: BCCD train "
                   "(typed, scored on BCCD val subtypes and WBC AP50) or TXL-PBC's Raabin-WBC train fields (untyped, detection: "
                   "scored on their val fields' WBC AP50)")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    from wbc.training import train

    if args.lab == "raabin":
        return raabin(args, train)

    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "review_loop")
    out.mkdir(parents=True)
    bccd, pbc = prepare(REPO_ROOT / "data" / "bccd.yaml"), prepare(REPO_ROOT / "data" / "pbc_wbcatt.yaml")
    class_map = yaml.safe_load((REPO_ROOT / "data" / "class_maps" / "pbc_to_bccd.yaml").read_text())
    bccd_truth, truth_val, pbc_val = truth_of(bccd, "train"), truth_of(bccd, "val"), pbc_truth(pbc, "val")
    predict_split(bccd, "train", out / "bccd_train", args.weights)
    results = {"settings": vars(args), "before": score(Path(args.weights), out / "before", bccd, truth_val, pbc, pbc_val, class_map), "runs": {}}
    print("before", json.dumps(results["before"]), flush=True)
    scorer = lambda weights, folder: score(weights, folder, bccd, truth_val, pbc, pbc_val, class_map)  # noqa: E731
    review_and_fine_tune(args, train, out, out / "bccd_train" / "predict", bccd_truth, scorer, results)
    write_table(out, results, {"BCCD val WBC AP50": lambda m: f"{m['bccd_wbc_ap50']:.3f}",
                               "BCCD val subtype accuracy": lambda m: f"{100 * m['bccd_subtype']['accuracy']:.1f}% ({m['bccd_subtype']['cells']})",
                               "PBC val type accuracy": lambda m: f"{100 * m['pbc_type']['accuracy']:.1f}% ({m['pbc_type']['cells']})"})


if __name__ == "__main__":
    main()
