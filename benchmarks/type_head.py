"""Who should name a WBC's type: the detector's classes, or a type head on its features?

    .venv/bin/python -m wbc.attributes.train --weights weights/wbc_multisource_yolov5n_352.pt --data data/pbc_wbcatt.yaml --types --name types
    .venv/bin/python benchmarks/type_head.py --head runs/attributes/types/head.pt --data data/pbc_wbcatt.yaml \
        --groups NE=BNE,SNE IG=MMY,MY,PMY --name pbc_val
    .venv/bin/python benchmarks/type_head.py --head runs/attributes/types/head.pt --data data/bccd.yaml --truth-attribute wbc_subtype \
        --truth-map NEUTROPHIL=BNE,SNE EOSINOPHIL=EO LYMPHOCYTE=LY MONOCYTE=MO BASOPHIL=BA --name bccd_val

The analyzer runs once per field with the type head as its head (as predict.py would run it, review
off); both typings are read off the same cells (:mod:`wbc.evaluation.typing`). Reported per source
(the fields' origin) and pooled: per-cell accuracy on the typed ground-truth boxes and, on datasets
of single-WBC fields, per-field accuracy; with ``--groups`` also with each group's classes as one.
With ``--fusion W ..`` also typed by both at once (the head's share W of a geometric mean of the
two distributions). ``--describes WBC ERB``: the head types the detector's WBC boxes, for a detector
whose classes are not types (WBC / ERB / RBC / PLT, design (a) of docs/cross_source.md).
Writes ``runs/benchmarks/type_head/<name>/`` (``results.json``, ``results.md``, ``cells.csv``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ultralytics.utils import TQDM  # noqa: E402

from wbc.canonical import prepare  # noqa: E402
from wbc.evaluation.cells import collect  # noqa: E402
from wbc.evaluation.evaluate import parse_groups  # noqa: E402
from wbc.evaluation.report import markdown_table  # noqa: E402
from wbc.evaluation.typing import accuracy, default_typers, fused_type, matched_types, top_cell_types, truth_types  # noqa: E402
from wbc.field_accuracy import field_accuracy, grouped_accuracy, has_field_classes  # noqa: E402
from wbc.inference import WBCAnalyzer  # noqa: E402
from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--head", required=True, help="a type head (wbc.attributes.train --types) of these weights")
    p.add_argument("--no-colour-norm", action="store_true", help="fields in their own colours (predict.py --no-colour-norm)")
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--split", default="val")
    p.add_argument("--groups", nargs="+", help="GROUP=CLASS,CLASS: also score with each group's classes as one")
    p.add_argument("--truth-attribute", help="the box attribute that gives the true type (default: the box's class)")
    p.add_argument("--truth-map", nargs="+", help="VALUE=CLASS,CLASS: the model classes each value of --truth-attribute accepts")
    p.add_argument("--fusion", nargs="+", type=float, default=[],
                   help="also type by both opinions at once, the head's share of each weighted geometric mean (0-1; "
                        "wbc.evaluation.typing.fused_probabilities)")
    p.add_argument("--describes", nargs="+",
                   help="the detector's classes the head types (default: the head's types themselves); for a detector "
                        "without type classes (design (a): data/wbc_multisource_3class.yaml), e.g. --describes WBC ERB")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    if bool(args.truth_attribute) != bool(args.truth_map):
        p.error("--truth-attribute and --truth-map go together")

    canonical = prepare(args.data)
    declared = {a.name: a for a in canonical.spec.attributes}
    if args.truth_attribute and args.truth_attribute not in declared:  # before the analyzer's pass over every field
        p.error(f"--truth-attribute {args.truth_attribute}: {args.data} declares {', '.join(declared) or 'no attributes'}")
    attribute = declared[args.truth_attribute] if args.truth_attribute else None
    groups = parse_groups(args.groups)
    # the detector's classes against the given head: no type head of the weights' own
    analyzer = WBCAnalyzer(args.weights, args.head, review=False, colour=not args.no_colour_norm, keep_evidence=bool(args.fusion),
                           types=False)
    wbc = analyzer.head.config.classes
    if args.describes:
        unknown = sorted(set(args.describes) - set(analyzer.model_names.values()))
        if unknown:
            p.error(f"--describes {' '.join(unknown)}: not classes of {args.weights} ({', '.join(analyzer.model_names.values())})")
        analyzer.head.config.classes = list(args.describes)  # the boxes the head types; the types stay its own
    typed_cells = args.describes or wbc
    typers = default_typers()
    if args.fusion:
        index = {n: i for i, n in analyzer.model_names.items()}
        missing = [c for c in wbc if c not in index]
        if missing:
            p.error(f"--fusion: the head types {', '.join(missing)}, which the detector has no class for")
        class_index = [index[c] for c in wbc]
        typers |= {f"fused {w:g}": (lambda c, w=w: fused_type(c, class_index, wbc, w)) for w in args.fusion}
    cells = collect(analyzer, canonical, args.split, args.batch, progress=lambda it, n: TQDM(it, total=n, desc=f"cells ({args.split})"))
    table = matched_types(cells, truth_types(cells, wbc, attribute, parse_groups(args.truth_map)), typers=typers)
    fields = canonical.fields()
    origin = dict(zip(fields["image"], fields["origin"]))
    table.insert(1, "origin", table["image"].map(origin))

    results = {"weights": args.weights, "head": args.head, "data": args.data, "split": args.split, "groups": groups, "per_origin": {}}
    rows = []
    for name, part in [*table.groupby("origin"), *([("all", table)] if table["origin"].nunique() > 1 else [])]:
        scores = {"cells": len(part), **{f"{who}_per_cell": accuracy(part, who) for who in typers}}
        if groups:
            scores.update({f"{who}_per_cell_grouped": accuracy(part, who, groups) for who in typers})
        results["per_origin"][name] = scores
        rows.append([name, len(part), *(f"{scores[k] * 100:.2f}%" for k in scores if k != "cells")])
    header = ["source", "typed cells", *typers] + ([f"{who}, groups" for who in typers] if groups else [])
    lines = [f"{args.data} {args.split}, {args.weights} with {args.head}", "", "Per cell (typed ground-truth boxes matched at IoU 0.5):", "",
             markdown_table(header, rows)]
    if has_field_classes(canonical, args.split):
        per_field = {}
        for who, predicted in top_cell_types(cells, typed_cells, typers).items():
            f = field_accuracy(canonical, args.split, predicted)
            per_field[who] = {"accuracy": f["accuracy"], "recall_per_class": f["recall_per_class"], "confusion": f["confusion"],
                              **({"grouped": grouped_accuracy(f["confusion"], groups)} if groups else {})}
        results["per_field"] = per_field
        classes = sorted(per_field["detector"]["recall_per_class"])
        lines += ["", "Per field (highest-confidence WBC-type cell):", "",
                  markdown_table(["", "accuracy", *(["groups"] if groups else []), *classes],
                                 [[who, f"{s['accuracy'] * 100:.2f}%", *([f"{s['grouped'] * 100:.2f}%"] if groups else []),
                                   *(f"{s['recall_per_class'][c]:.3f}" for c in classes)] for who, s in per_field.items()])]
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "type_head")
    out.mkdir(parents=True)
    table.assign(truth=table["truth"].map(lambda s: "|".join(sorted(s)))).to_csv(out / "cells.csv", index=False)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"results in {out}")


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
