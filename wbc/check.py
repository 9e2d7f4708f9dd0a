"""Dataset check: import a dataset yaml and print, per split, images, boxes per class, attribute
value counts and every skipped / repaired / noted item with its reason."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from wbc.canonical import CanonicalDataset, prepare
from wbc.errors import DatasetError
from wbc.schema import NOT_APPLICABLE, UNKNOWN


def summarize(canonical: CanonicalDataset) -> dict:
    """Counts per split: images, boxes per class, attribute values, problems by (action, reason)."""
    spec = canonical.spec
    boxes, fields = canonical.attributes(), canonical.fields()
    summary = {"dataset": spec.name, "yaml": str(spec.yaml_path), "root": str(spec.root), "canonical": str(canonical.root), "splits": {}}
    for split in canonical.splits:
        b, f = boxes[boxes["split"] == split], fields[fields["split"] == split]
        per_class = Counter(b["class"])
        attributes = {}
        for attr in spec.attributes:
            codes = Counter(int(c) for c in b[attr.name])
            counts = {v: codes.get(i, 0) for i, v in enumerate(attr.values)}
            counts["(unknown)"] = codes.get(UNKNOWN, 0)
            counts["(not applicable)"] = codes.get(NOT_APPLICABLE, 0)
            attributes[attr.name] = counts
        problems = canonical.problems.counts(split)
        summary["splits"][split] = {
            "images": len(f),
            "images_without_boxes": len(set(f["image"]) - set(b["image"])),
            "boxes": len(b),
            "boxes_per_class": {name: int(per_class.get(name, 0)) for name in spec.names},
            "fields_per_class": dict(sorted(Counter(x for x in f["field_class"] if x).items())),
            "fields_per_origin": dict(sorted(Counter(f["origin"]).items())),
            "boxes_with_any_known_attribute": int((b[[a.name for a in spec.attributes]] >= 0).any(axis=1).sum()) if spec.attributes else 0,
            "attributes": attributes,
            "problems": [{"action": a, "reason": r, "count": n} for (a, r), n in sorted(problems.items())],
        }
    if canonical.left_out:
        summary["splits_left_out"] = canonical.left_out
    other = canonical.problems.counts("all")
    if other:
        summary["dataset_problems"] = [{"action": a, "reason": r, "count": n} for (a, r), n in sorted(other.items())]
    return summary


def format_summary(summary: dict, canonical: CanonicalDataset, verbose: bool = False) -> str:
    lines = [f"dataset {summary['dataset']}  ({summary['yaml']})", f"  raw data:  {summary['root']}", f"  canonical: {summary['canonical']}"]
    for split, s in summary["splits"].items():
        lines += ["", f"[{split}] {s['images']} images ({s['images_without_boxes']} without boxes), {s['boxes']} boxes"]
        width = max(len(n) for n in s["boxes_per_class"])
        lines += ["  boxes per class:"] + [f"    {n:<{width}} {c:>7}" for n, c in s["boxes_per_class"].items()]
        if len(s["fields_per_origin"]) > 1:
            lines += ["  fields per origin: " + ", ".join(f"{n} {c}" for n, c in s["fields_per_origin"].items())]
        if s["fields_per_class"]:
            lines += ["  fields per labelled class: " + ", ".join(f"{n} {c}" for n, c in s["fields_per_class"].items())]
        if s["attributes"]:
            lines += [f"  attributes ({s['boxes_with_any_known_attribute']} boxes with a known value):"]
            for name, counts in s["attributes"].items():
                lines.append(f"    {name}: " + ", ".join(f"{v} {c}" for v, c in counts.items()))
        lines += ["  problems:" if s["problems"] else "  problems: none"]
        lines += [f"    {p['action']:<8} {p['count']:>6}  {p['reason']}" for p in s["problems"]]
        if verbose:
            lines += [f"      {p}" for p in canonical.problems.problems if p.split == split]
    for split, path in summary.get("splits_left_out", {}).items():
        lines += ["", f"[{split}] split left out: {path} not found"]
    if summary.get("dataset_problems"):
        lines += ["", "[whole dataset]"] + [f"    {p['action']:<8} {p['count']:>6}  {p['reason']}" for p in summary["dataset_problems"]]
        if verbose:
            lines += [f"      {p}" for p in canonical.problems.problems if p.split == "all"]
    if not verbose and canonical.problems.problems:
        lines += ["", "(--verbose lists every item with its file and line)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="data/pbc_wbcatt.yaml", help="dataset yaml")
    parser.add_argument("--data-root", help="dataset root, overriding the yaml's path (default: under $WBC_DATA_ROOT)")
    parser.add_argument("--rebuild", action="store_true", help="re-import even if the cache is up to date")
    parser.add_argument("--verbose", action="store_true", help="list every skipped / repaired / noted item")
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if anything was skipped or repaired")
    args = parser.parse_args(argv)
    try:
        canonical = prepare(args.data, args.data_root, rebuild=args.rebuild, need=())
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarize(canonical)
    print(format_summary(summary, canonical, args.verbose))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    dropped = sum(1 for p in canonical.problems.problems if p.action in ("skipped", "repaired"))
    return 1 if args.strict and dropped else 0
