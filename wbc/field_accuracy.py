"""WBC-type accuracy per field, for datasets whose fields carry one labelled WBC (PBC):
the class of the highest-confidence WBC-type detection vs the field's class. ``python test.py``
reports it for such datasets."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from wbc.canonical import CanonicalDataset

NO_WBC = "(no WBC detected)"


def has_field_classes(canonical: CanonicalDataset, split: str) -> bool:
    fields = canonical.fields()
    return bool(((fields["split"] == split) & (fields["field_class"] != "")).any())


def top_wbc_per_field(detections: Iterable[tuple[str, str, float]], wbc_classes: Iterable[str]) -> dict[str, str]:
    """{image: class of its highest-scoring WBC-type detection} from (image, class name, score) triples."""
    wbc, best = set(wbc_classes), {}
    for image, cls, score in detections:
        if cls in wbc and score > best.get(image, (-1.0, ""))[0]:
            best[image] = (score, cls)
    return {image: cls for image, (_, cls) in best.items()}


def field_accuracy(canonical: CanonicalDataset, split: str, predicted: dict[str, str]) -> dict:
    """Top-1 WBC type per field against the field classes. ``predicted``: {image: class}; a field
    missing from it counts as NO_WBC. Returns accuracy, per-class recall, the confusion counts
    {true: {predicted: n}} and the number of fields."""
    fields = canonical.fields()
    fields = fields[(fields["split"] == split) & (fields["field_class"] != "")]
    if fields.empty:
        raise ValueError(f"{canonical.spec.name} {split}: no field carries a field class; field accuracy needs single-WBC fields")
    truth = list(fields["field_class"])
    guesses = [predicted.get(image, NO_WBC) for image in fields["image"]]
    confusion: dict[str, Counter] = {}
    for t, p in zip(truth, guesses):
        confusion.setdefault(t, Counter())[p] += 1
    correct = sum(t == p for t, p in zip(truth, guesses))
    return {
        "split": split, "fields": len(truth), "accuracy": correct / len(truth),
        "no_wbc_detected": guesses.count(NO_WBC),
        "recall_per_class": {c: confusion[c][c] / sum(confusion[c].values()) for c in sorted(confusion)},
        "confusion": {t: dict(sorted(c.items())) for t, c in sorted(confusion.items())},
    }


def grouped_accuracy(confusion: dict[str, dict[str, int]], groups: dict[str, list[str]]) -> float:
    """Accuracy of a :func:`field_accuracy` confusion when every class of a group counts as the group
    (PBC's published scheme: BNE + SNE neutrophils, MMY + MY + PMY immature granulocytes)."""
    label = {c: g for g, members in groups.items() for c in members}
    total = sum(n for row in confusion.values() for n in row.values())
    correct = sum(n for t, row in confusion.items() for p, n in row.items() if label.get(t, t) == label.get(p, p))
    return correct / total


def field_accuracy_of_predictions(canonical: CanonicalDataset, split: str, predictions: Iterable[dict]) -> dict:
    """:func:`field_accuracy` of COCO-style detection records (``file_name``, ``category_id`` = class + 1,
    ``score``), as the ultralytics validator writes them (see :func:`wbc.evaluation.detection.validate`)."""
    names = canonical.spec.names
    detections = ((p["file_name"], names[p["category_id"] - 1], p["score"]) for p in predictions)
    return field_accuracy(canonical, split, top_wbc_per_field(detections, canonical.spec.wbc_classes))
