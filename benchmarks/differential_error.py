"""Error of the differential count, scored on what ``predict.py`` writes, exactly as a user runs it.

    .venv/bin/python benchmarks/differential_error.py --data data/pbc_wbcatt.yaml --name pbc_val
    .venv/bin/python benchmarks/differential_error.py --data data/bccd.yaml --truth-attribute wbc_subtype \\
        --groups NEUTROPHIL=BNE,SNE EOSINOPHIL=EO LYMPHOCYTE=LY MONOCYTE=MO BASOPHIL=BA --name bccd_val

Per class, in percentage points of WBC: the mean absolute error per field and the error of the pooled
count, with the "unidentified" bin counted as an error and with identified cells only
(:mod:`wbc.evaluation.differential_error`). Nucleated red cells are outside the differential, as in
predict.py. ``--truth-attribute``: take each WBC box's type from this attribute (BCCD's subtype);
fields with a WBC of unknown type are left out. ``--groups``: the truth's name for model classes.
Writes ``runs/differential_error/<name>/`` (``metrics.json``, ``summary.md``, the predict run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wbc.canonical import prepare  # noqa: E402
from wbc.evaluation.differential_error import differential_error, error_table, predicted_per_field, truth_per_field  # noqa: E402
from wbc.evaluation.through_predict import add_split_arguments, predict_split, predict_switches  # noqa: E402
from wbc.paths import REPO_ROOT, new_run_dir  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_split_arguments(p)
    p.add_argument("--truth-attribute", help="the attribute of WBC boxes that names their type (default: the box class)")
    p.add_argument("--groups", nargs="*", default=[], help="TRUTH=CLASS,CLASS: model classes the truth calls TRUTH")
    p.add_argument("--review-rate", type=float, help="predict.py's --review-rate (default: the stored operating point)")
    p.add_argument("--no-review-model", action="store_true", help="predict.py's --no-review-model (the 0.5 confidence rule)")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    canonical = prepare(args.data)
    spec = canonical.spec
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "differential_error")
    summary, cells_json, _ = predict_split(canonical, args.split, out, args.weights, review_rate=args.review_rate,
                                           review=False if args.no_review_model else None, **predict_switches(args))
    groups = {c: truth for g in args.groups for truth, members in [g.split("=", 1)] for c in members.split(",")}
    boxes = canonical.attributes()
    boxes = boxes[boxes["split"] == args.split]
    nrbc = set(spec.nrbc_classes or [])
    if args.truth_attribute:
        values = next(a.values for a in spec.used_attributes if a.name == args.truth_attribute)
        classes = list(values)
        truth, skipped = truth_per_field(boxes, spec.wbc_classes, lambda r: None if r[args.truth_attribute] < 0 else values[int(r[args.truth_attribute])])
    else:
        classes = [c for c in spec.wbc_classes if c not in nrbc]
        truth, skipped = truth_per_field(boxes, classes)
    wbc = [c for c in summary["wbc_classes"] if c not in summary["nrbc_classes"]]
    result = differential_error(truth, predicted_per_field(cells_json, wbc, groups), classes)
    result.update({"fields_left_out": skipped, "settings": vars(args), "review": summary["review"]})
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    table = error_table(result)
    (out / "summary.md").write_text(f"# Differential error, {args.weights} on {args.data} {args.split}, through predict.py\n\n{table}\n")
    print(table)
    print(f"{skipped} fields left out (a WBC of unknown type); written to {out}")


if __name__ == "__main__":
    main()
