"""Cells of types the model was never trained on: do they go to "unidentified"? Leave-classes-out on PBC.

    .venv/bin/python benchmarks/unseen_types.py --name pbc_val

For each run (default: without BA; without PMY + MY + MMY; without MO; without EO; without LY) a type
stage is trained on the other WBC types only (a linear probe on the detector's cached feature vectors
of PBC train cells; :mod:`wbc.review.unseen`), and scored on PBC val: the left-out cells against the
known ones, plus erythroblasts and platelets presented as WBC crops, and synthetic artefacts made from
val fields (:mod:`wbc.review.artefacts`: debris, stain precipitate, cells cut by the field edge).
Reported per run: AUROC of every OOD score, and at a 5% review rate for known cells (cross-fitted on the
two halves of the val fields) the share of each group sent to "unidentified".

The detector itself was trained on all PBC classes, so its features have seen the left-out types as
classes of their own: this measures the review decision of a type stage that has not, on features that
have. Writes ``runs/benchmarks/unseen_types/<name>/`` (``results.json``, ``results.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from wbc.canonical import prepare  # noqa: E402
from wbc.inference import WBCAnalyzer  # noqa: E402
from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir  # noqa: E402
from wbc.review.artefacts import MAKERS  # noqa: E402
from wbc.review.decision import DEFAULT_PROBABILITY_SHARE  # noqa: E402
from wbc.review.fit import DEFAULT_K, DEFAULT_SHRINKAGE  # noqa: E402
from wbc.review.gather import gather  # noqa: E402
from wbc.review.unseen import evaluate_run  # noqa: E402

RUNS = {"BA": ["BA"], "IG": ["PMY", "MY", "MMY"], "MO": ["MO"], "EO": ["EO"], "LY": ["LY"]}
DECISIONS = {"probability only": [], "knn": ["knn"], "mahalanobis": ["mahalanobis"], "knn + mahalanobis": ["knn", "mahalanobis"],
             "energy": ["energy"], "knn + mahalanobis + energy": ["knn", "mahalanobis", "energy"]}
SHOWN = "knn + mahalanobis + energy"  # the decision the table details (the shipped review model's OOD score)


def presented_as_wbc(analyzer: WBCAnalyzer, canonical, split: str, fields: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Feature vectors of platelets and synthetic artefacts presented as WBC boxes, on ``fields`` val fields."""
    truth = canonical.attributes()
    truth = truth[truth["split"] == split]
    wbc = set(canonical.spec.wbc_classes)
    rng = np.random.default_rng(seed)
    images = sorted(truth["image"].unique())
    images = [images[i] for i in sorted(rng.choice(len(images), min(fields, len(images)), replace=False))]
    groups: dict[str, list[np.ndarray]] = {"platelet": [], **{k: [] for k in MAKERS}}
    for name in images:
        rows = truth[truth["image"] == name]
        image = cv2.imread(str(canonical.root / "images" / split / name))
        cell = rows[rows["class"].isin(wbc)]
        plt = rows[rows["class"] == "PLT"][["x1", "y1", "x2", "y2"]].to_numpy(float)
        items = [("platelet", image, plt)] if len(plt) else []
        if len(cell):
            box = cell.iloc[0][["x1", "y1", "x2", "y2"]].to_numpy(float)
            for kind, make in MAKERS.items():
                made = make(image, box, rng)
                if made is not None:
                    items.append((kind, made[0], made[1][None]))
        for (kind, _, _), (features, _) in zip(items, analyzer.evidence_at([im for _, im, _ in items], [b for _, _, b in items])):
            groups[kind].append(features)
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in groups.items() if v}


def table(results: dict) -> str:
    lines = [f"| run (left out) | known acc. | group | AUROC knn | mahalanobis | msp | energy | {SHOWN} | unidentified, {SHOWN} | unidentified, knn |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run, r in results["runs"].items():
        d1, d2 = r["decision"][SHOWN], r["decision"]["knn"]
        lines.append(f"| {run} | {100 * r['known accuracy']:.1f}% | known | | | | | | {100 * d1['known unidentified']:.1f}% | "
                     f"{100 * d2['known unidentified']:.1f}% |")
        for g, a in r["auroc"].items():
            lines.append(f"| | | {g} ({r['cells'][g]}) | {a['knn']:.3f} | {a['mahalanobis']:.3f} | {a['msp']:.3f} | {a['energy']:.3f} | "
                         f"{a[SHOWN]:.3f} | {100 * d1[f'{g} unidentified']:.1f}% | {100 * d2[f'{g} unidentified']:.1f}% |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--data", default=str(REPO_ROOT / "data" / "pbc_wbcatt.yaml"))
    p.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--artefact-fields", type=int, default=300, help="val fields the platelets and artefacts are taken from")
    p.add_argument("--review-rate", type=float, default=0.05)
    p.add_argument("--probability-share", type=float, default=DEFAULT_PROBABILITY_SHARE)
    p.add_argument("--k", type=int, default=DEFAULT_K)
    p.add_argument("--shrinkage", type=float, default=DEFAULT_SHRINKAGE)
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    from ultralytics.utils import TQDM

    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "unseen_types")
    out.mkdir(parents=True)
    canonical = prepare(args.data)
    analyzer = WBCAnalyzer(args.weights, review=False, keep_evidence=True)
    evidence = {s: gather(analyzer, canonical, s, progress=lambda it, n, s=s: TQDM(it, total=n, desc=f"cells ({s})"), weights=args.weights)
                for s in ("train", "val")}
    train, val = evidence["train"], evidence["val"]
    nrbc = [c for c in canonical.spec.wbc_classes if c == "ERB"]
    val_types = val.cells["truth"].to_numpy()
    wbc_val = ~np.isin(val_types, nrbc)
    images = sorted(val.cells["image"].unique())
    half = {name: i % 2 for i, name in enumerate(images)}
    fold = np.array([half[n] for n in val.cells["image"]])
    unseen = {"erythroblast": torch.from_numpy(val.features[~wbc_val])} if nrbc else {}
    unseen.update(presented_as_wbc(analyzer, canonical, "val", args.artefact_fields))
    wbc_types = [c for c in canonical.spec.wbc_classes if c not in nrbc]
    results = {"settings": vars(args), "runs": {}}
    for run in args.runs:
        known = [c for c in wbc_types if c not in RUNS[run]]
        results["runs"][run] = evaluate_run(torch.from_numpy(train.features), train.cells["truth"].to_numpy(),
                                            torch.from_numpy(val.features[wbc_val]), val_types[wbc_val], known, unseen,
                                            fold[wbc_val], DECISIONS, args.review_rate, args.probability_share, args.k,
                                            args.shrinkage)
        print(run, json.dumps(results["runs"][run]["decision"], indent=1), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table(results) + "\n")
    print(table(results))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
