"""Run ``predict.py``'s own code on the fields of a dataset split, as a user runs it, for benchmarks
that score what a lab sees (``benchmarks/predict_by_origin.py``, ``benchmarks/differential_error.py``)."""

from __future__ import annotations

from pathlib import Path

from wbc.canonical import CanonicalDataset
from wbc.predict import predict


def predict_split(canonical: CanonicalDataset, split: str, out: Path, weights, **predict_args) -> tuple[dict, Path, "object"]:
    """(predict's summary, its cells.json, the split's fields table sorted by image); predict writes under ``out / 'predict'``."""
    fields = canonical.fields()
    fields = fields[fields["split"] == split].sort_values("image")
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "images.txt"
    listing.write_text("".join(f"{canonical.root / 'images' / split / n}\n" for n in fields["image"]))
    summary = predict(listing, out / "predict", weights, annotated=False, report=False, log=lambda *a: None, **predict_args)
    return summary, out / "predict" / "cells.json", fields
