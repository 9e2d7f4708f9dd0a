"""Colour normalisation of a field to the model's training fields, before the detector sees it.

Reinhard et al. 2001 ("Color transfer between images"), in CIELAB: each channel of the field is
shifted and scaled so that its mean and standard deviation over the field match those of the
reference, the training fields of the model's reference origin (the one its scale comes from, PBC
for the shipped model). A smear of another stain batch, camera or lamp then reaches the network
nearer the colours it was trained on. Measured in docs/cross_source.md: on a source the model never
saw, it is the largest single gain in typing.

The reference lives in the model card (key ``colour_reference``). Per-channel gains are clipped to
[1 / MAX_GAIN, MAX_GAIN], so that a nearly uniform field (a blank tile, a field of background)
is not turned into amplified noise. Each field is normalised on its own, and each tile of a large one:
a tile is a window of the training fields' size, which is what the reference describes.

    python -m wbc.colour --data data/wbc_multisource.yaml --card weights/wbc_multisource_yolov5n_352.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MAX_GAIN = 4.0  # the largest gain measured on real fields is 3.3 (a pale LeukemiaAttri sample's a* channel)


@dataclass(frozen=True)
class ColourReference:
    mean: tuple[float, float, float]  # CIELAB as OpenCV holds it for 8-bit images (each channel 0-255)
    std: tuple[float, float, float]
    fields: int
    source: str

    def to_card(self) -> dict:
        return {"lab_mean": list(self.mean), "lab_std": list(self.std), "fields": self.fields, "source": self.source}

    @classmethod
    def from_card(cls, card: dict) -> ColourReference | None:
        entry = card.get("colour_reference")
        if not entry:
            return None
        return cls(tuple(entry["lab_mean"]), tuple(entry["lab_std"]), int(entry.get("fields", 0)), str(entry.get("source", "")))


def _lab_statistics(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = cv2.meanStdDev(lab)
    return mean.ravel(), std.ravel()


def lab_statistics(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, standard deviation) of a BGR uint8 image's CIELAB channels."""
    return _lab_statistics(cv2.cvtColor(image, cv2.COLOR_BGR2LAB))


def normalize(image: np.ndarray, reference: ColourReference) -> np.ndarray:
    """The BGR uint8 field with its CIELAB mean and standard deviation moved to the reference's. The
    8-bit CIELAB values take 256 levels per channel, so the per-channel affine map is a lookup table."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    mean, std = _lab_statistics(lab)
    gain = np.clip(np.asarray(reference.std) / np.maximum(std, 1e-3), 1 / MAX_GAIN, MAX_GAIN)
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip((levels - mean) * gain + np.asarray(reference.mean) + 0.5, 0, 255).astype(np.uint8)  # (256, 3)
    return cv2.cvtColor(cv2.LUT(lab, table[:, None, :]), cv2.COLOR_LAB2BGR)


def reference_of(canonical_root: str | Path, origin: str, split: str = "train", sample: int = 300) -> ColourReference:
    """The mean of the per-field CIELAB means and standard deviations of up to ``sample`` fields of
    ``origin`` in a canonical dataset's ``split`` (a fixed sample, ranked by a hash of the file name, as
    :func:`wbc.rescale.origin_rbc_diameters`)."""
    import pandas as pd

    root = Path(canonical_root)
    fields = pd.read_csv(root / "fields.csv", keep_default_na=False)
    names = fields[(fields["split"] == split) & (fields["origin"] == origin)]["image"]
    if names.empty:
        raise ValueError(f"{root / 'fields.csv'}: no {split} fields of origin {origin!r}")
    names = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())[:sample]
    stats = [lab_statistics(cv2.imread(str(root / "images" / split / n))) for n in names]
    mean = np.mean([m for m, _ in stats], 0)
    std = np.mean([s for _, s in stats], 0)
    return ColourReference(tuple(round(float(v), 3) for v in mean), tuple(round(float(v), 3) for v in std), len(names),
                           f"{origin} {split} fields")


def main(argv=None):
    from wbc.canonical import prepare
    from wbc.rescale import reference_origin

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the dataset yaml the model was trained on")
    p.add_argument("--card", type=Path, required=True, help="the model card's JSON (<weights stem>.json): its colour_reference is set")
    p.add_argument("--origin", help="the reference origin (default: the one with the most train fields, as the training scale)")
    p.add_argument("--sample", type=int, default=300)
    args = p.parse_args(argv)
    canonical = prepare(args.data)
    reference = reference_of(canonical.root, args.origin or reference_origin(canonical.fields()), sample=args.sample)
    card = json.loads(args.card.read_text()) if args.card.is_file() else {}
    card["colour_reference"] = reference.to_card()
    args.card.write_text(json.dumps(card, indent=2))
    print(f"{args.card}: colour_reference from {reference.fields} {reference.source}: CIELAB mean {reference.mean}, std {reference.std}")


if __name__ == "__main__":
    from wbc.cli import run

    run(main)
