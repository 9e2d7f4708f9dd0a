"""The evidence of every true WBC-type cell of a split (:mod:`wbc.review.features`): the analyzer
runs on each field as ``predict.py`` runs it, and each detected cell that matches a ground-truth
WBC-type box (IoU >= 0.5, any class) keeps its feature vector, class scores, attribute
probabilities, and the truth (class or label set, attribute codes, origin).

Cached under ``<cache>/review/`` by weights, attribute and type heads, dataset, split and colours (rebuilt when any of these files changes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wbc.canonical import CanonicalDataset
from wbc.evaluation.cells import BOX, SplitCells, collect, match_field

from wbc.inference import WBCAnalyzer
from wbc.paths import cache_root


@dataclass
class SplitEvidence:
    cells: pd.DataFrame  # one row per matched cell: image, origin, truth (class or label set), predicted (detector class), confidence
    features: np.ndarray  # (N, D)
    scores: np.ndarray  # (N, detector classes) sigmoid class scores
    attributes: dict[str, np.ndarray]  # name -> (N, values) probabilities (NaN where the cell has none)
    truth_attributes: pd.DataFrame  # (N, attributes) codes, negative where unknown / not applicable
    types: np.ndarray | None = None  # (N, typed classes) the type head's probabilities (wbc.type_fusion), where the analyzer has one

    def subset(self, keep: np.ndarray) -> "SplitEvidence":
        keep = np.asarray(keep)
        return SplitEvidence(self.cells[keep].reset_index(drop=True), self.features[keep], self.scores[keep],
                             {k: v[keep] for k, v in self.attributes.items()}, self.truth_attributes[keep].reset_index(drop=True),
                             None if self.types is None else self.types[keep])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, features=self.features, scores=self.scores, **{f"attr_{k}": v for k, v in self.attributes.items()},
                            **({"types": self.types} if self.types is not None else {}))
        self.cells.join(self.truth_attributes.add_prefix("gt_")).to_csv(path.with_suffix(".csv"), index=False)

    @classmethod
    def load(cls, path: Path) -> "SplitEvidence":
        arrays = np.load(path)
        table = pd.read_csv(path.with_suffix(".csv"), keep_default_na=False)
        gt = [c for c in table.columns if c.startswith("gt_")]
        return cls(table.drop(columns=gt), arrays["features"], arrays["scores"],
                   {k[5:]: arrays[k] for k in arrays.files if k.startswith("attr_")},
                   table[gt].rename(columns=lambda c: c[3:]).astype(int), arrays["types"] if "types" in arrays.files else None)


EVIDENCE_VERSION = 3  # raise when what a cell's evidence holds changes: older caches are then not read


def _key(*paths, colour=None) -> str:
    """Of the files (path and time; None: absent) and the colours the analyzer moves fields to (wbc.colour)."""
    digest = hashlib.sha1(str(EVIDENCE_VERSION).encode())
    for p in paths:
        if p is None:
            digest.update(b"-")
            continue
        p = Path(p)
        digest.update(f"{p.resolve()}:{p.stat().st_mtime_ns}".encode())
    if colour is not None:
        digest.update(repr(colour.to_card()).encode())
    return digest.hexdigest()[:12]


def gather(analyzer: WBCAnalyzer, canonical: CanonicalDataset, split: str, batch: int = 16, progress=None,
           weights: str | Path | None = None, match_iou: float = 0.5) -> SplitEvidence:
    """Run (or read from the cache, where ``weights`` is given) the evidence of ``split``'s true WBC-type cells."""
    cache = None
    if weights is not None:
        # the attribute and type heads' files too: their probabilities are part of every cell's evidence
        key = _key(weights, canonical.spec.yaml_path, analyzer.head_path, analyzer.type_head_path, colour=analyzer.colour_reference)
        cache = cache_root() / "review" / f"{canonical.spec.name}-{split}-{key}.npz"
        if cache.is_file():
            return SplitEvidence.load(cache)
    if not analyzer.keep_evidence:
        raise ValueError("gather needs an analyzer made with keep_evidence=True")
    out = evidence_of(collect(analyzer, canonical, split, batch, progress), canonical, analyzer, match_iou)
    if cache is not None:
        out.save(cache)
    return out


def evidence_of(result: SplitCells, canonical: CanonicalDataset, analyzer: WBCAnalyzer, match_iou: float = 0.5) -> SplitEvidence:
    """The evidence of the true WBC-type cells among ``result``'s cells (collected with ``keep_evidence``)."""
    spec = canonical.spec
    typed = {*spec.wbc_classes, *spec.label_sets}
    fields = canonical.fields().set_index("image")
    names = [a.name for a in spec.used_attributes]
    rows, features, scores, probabilities, truth_codes, types = [], [], [], {}, [], []
    for image, truth in result.truth.groupby("image", sort=True):
        truth = truth[truth["class"].isin(typed)]
        cells = result.cells.get(image, [])
        for g, c, iou in match_field(truth[BOX].to_numpy(float), list(truth["class"]), cells, match_iou, False):
            cell, t = cells[c], truth.iloc[g]
            if cell.evidence is None:  # detected as a class without evidence (RBC, platelet): not a WBC-type cell
                continue
            rows.append({"image": image, "origin": fields.at[image, "origin"], "truth": t["class"], "predicted": cell.class_name,
                         "confidence": cell.confidence, "iou": iou})
            features.append(cell.evidence["features"])
            scores.append(cell.evidence["scores"])
            truth_codes.append([int(t[n]) for n in names])
            types.append(cell.evidence.get("types", np.full(len(analyzer.type_index), np.nan, np.float32)))
            for name, spec_values in ((s["name"], s["values"]) for s in analyzer.attribute_specs):
                p = cell.evidence.get("attributes", {}).get(name)
                probabilities.setdefault(name, []).append(p if p is not None else np.full(len(spec_values), np.nan, np.float32))
    if not rows:
        raise ValueError(f"{spec.name} {result.split}: no detected cell matches a WBC-type box (IoU >= {match_iou}); nothing to fit on")
    return SplitEvidence(pd.DataFrame(rows, columns=["image", "origin", "truth", "predicted", "confidence", "iou"]),
                         np.array(features, np.float32), np.array(scores, np.float32),
                         {k: np.array(v, np.float32) for k, v in probabilities.items()},
                         pd.DataFrame(truth_codes, columns=names, dtype=int),
                         np.array(types, np.float32) if analyzer.type_head is not None else None)
