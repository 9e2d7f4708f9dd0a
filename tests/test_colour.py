"""wbc.colour: fields moved to the training fields' CIELAB statistics before the detector sees them."""

import json

import cv2
import numpy as np
import pytest

from wbc.colour import MAX_GAIN, ColourReference, lab_statistics, normalize, reference_of


def smear(rng, background=(200, 225, 250), cell=(150, 60, 120), size=160):
    """A generated field: a bright background, a few purple discs, sensor noise (BGR uint8)."""
    image = np.empty((size, size, 3), np.float32)
    image[:] = background
    for _ in range(6):
        cv2.circle(image, (int(rng.integers(20, size - 20)), int(rng.integers(20, size - 20))), int(rng.integers(8, 18)), cell, -1)
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def test_a_field_gets_the_reference_colours_and_a_reference_field_stays_as_it_is():
    rng = np.random.default_rng(0)
    pbc_like = smear(rng)
    mean, std = lab_statistics(pbc_like)
    reference = ColourReference(tuple(mean), tuple(std), 1, "generated")
    assert np.abs(normalize(pbc_like, reference).astype(int) - pbc_like).max() <= 2  # a field like the reference barely moves

    other = smear(rng, background=(170, 190, 180), cell=(120, 90, 60))  # another lamp and stain: grey-green, brown cells
    moved = normalize(other, reference)
    m, s = lab_statistics(moved)
    assert np.allclose(m, mean, atol=1.5) and np.allclose(s, std, rtol=0.1, atol=1.0)
    assert np.abs(lab_statistics(other)[0] - mean).max() > 10  # it was far from the reference before


def test_a_uniform_field_is_not_blown_up_into_noise():
    rng = np.random.default_rng(1)
    blank = np.clip(np.full((64, 64, 3), 210, np.float32) + rng.normal(0, 0.5, (64, 64, 3)), 0, 255).astype(np.uint8)
    reference = ColourReference((200.0, 139.0, 134.0), (41.0, 9.6, 14.8), 1, "generated")
    _, std = lab_statistics(normalize(blank, reference))
    _, before = lab_statistics(blank)
    assert (std <= before * MAX_GAIN + 1.5).all()  # gains are clipped: far from the reference's 41


def test_the_reference_comes_from_the_reference_origins_train_fields_and_rides_in_the_card(tmp_path):
    rng = np.random.default_rng(2)
    (tmp_path / "images" / "train").mkdir(parents=True)
    rows = ["image,split,origin,width,height"]
    for i in range(4):
        origin = "A" if i < 3 else "B"
        cv2.imwrite(str(tmp_path / "images" / "train" / f"{i}.png"), smear(rng) if origin == "A" else smear(rng, (90, 90, 90)))
        rows.append(f"{i}.png,train,{origin},160,160")
    (tmp_path / "fields.csv").write_text("\n".join(rows) + "\n")
    reference = reference_of(tmp_path, "A")
    assert reference.fields == 3 and reference.source == "A train fields"
    assert ColourReference.from_card(json.loads(json.dumps({"colour_reference": reference.to_card()}))) == reference
    assert ColourReference.from_card({}) is None
    with pytest.raises(ValueError, match="no train fields of origin 'C'"):
        reference_of(tmp_path, "C")


def test_the_detector_sees_the_normalised_field_and_a_crop_classifier_the_field_itself(tmp_path, monkeypatch):
    import shutil

    from wbc.inference import WBCAnalyzer
    from wbc.paths import DEFAULT_WEIGHTS

    weights = tmp_path / "m.pt"
    shutil.copy(DEFAULT_WEIGHTS, weights)
    card = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert "colour_reference" in card  # the shipped model carries its training colours
    weights.with_suffix(".json").write_text(json.dumps(card))
    field = smear(np.random.default_rng(3), background=(170, 190, 180), cell=(120, 90, 60), size=352)
    seen = {}
    for colour in (True, False):
        analyzer = WBCAnalyzer(weights, head=False, review=False, rescale=False, colour=colour)
        _, work, boxed, _ = analyzer._prepare([field], [1.0])
        seen[colour] = boxed[0][0]
        assert work[0] is field  # what a crop classifier is given: the field's own pixels
    assert np.abs(seen[True].astype(int) - seen[False]).mean() > 10
    assert seen[True].shape == field.shape  # a 352 px field at input 352: no resize, no padding
    assert np.array_equal(seen[True], normalize(field, ColourReference.from_card(card))) and np.array_equal(seen[False], field)
