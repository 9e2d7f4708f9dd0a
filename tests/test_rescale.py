"""Fields at the training scale: the group estimate, the fixed-gain letterbox and its inverse, the
scaled training dataset, and prediction on a field at another magnification."""

import json

import cv2
import numpy as np
import pytest
import torch

from wbc.attributes.data import letterbox, unletterbox
from wbc.rescale import AGREE, consensus, factor_for, resize, tile_needed


def test_consensus_pools_agreeing_fields_and_keeps_outliers_and_given_sizes():
    found = [(70.0, "estimated"), (74.0, "estimated"), (78.0, "estimated"), (None, "no estimate"), (140.0, "estimated"), (50.0, "given")]
    out = consensus(found)
    assert [d for d, _ in out[:4]] == [74.0] * 4  # the three that agree and the one without an estimate take their median
    assert out[0][1] == "estimated, median of 3 fields"
    assert out[4] == (140.0, "estimated")  # twice as large: another microscope, kept
    assert out[5] == (50.0, "given")
    assert consensus([(70.0, "estimated"), (90.0, "estimated")]) == [(70.0, "estimated"), (90.0, "estimated")]  # too few to pool
    assert AGREE < 2


def test_implausible_factors_leave_the_field_as_it_is():
    assert factor_for(144.0, 72.0) == pytest.approx(0.5)
    assert factor_for(None, 72.0) == 1.0 and factor_for(72.0, None) == 1.0
    assert factor_for(1000.0, 72.0) == 1.0 and factor_for(5.0, 72.0) == 1.0


def test_a_field_slightly_larger_than_a_tile_is_not_tiled():
    assert not tile_needed(480, 640, 480) and tile_needed(3000, 4000, 363)
    assert not tile_needed(363, 400, 363)


@pytest.mark.parametrize("shape", [(200, 150), (363, 360), (480, 640)])
def test_fixed_gain_letterbox_maps_boxes_back_exactly(shape):
    image = np.zeros((*shape, 3), np.uint8)
    out, gain, (px, py) = letterbox(image, 352, 32, gain=352 / 363)
    assert gain == pytest.approx(352 / 363) and out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0
    assert out.shape[0] >= round(shape[0] * gain) and out.shape[1] >= round(shape[1] * gain)
    box = torch.tensor([[10.0, 20.0, 100.0, 120.0]])
    boxed = box * gain + torch.tensor([px, py, px, py])
    torch.testing.assert_close(unletterbox(boxed, out.shape[:2], shape, gain), box)
    with pytest.raises(ValueError, match="stride"):
        letterbox(image, 352, None, gain=1.0)


def test_resize_is_identity_at_factor_one():
    image = np.zeros((10, 20, 3), np.uint8)
    assert resize(image, 1.0) is image and resize(image, 0.5).shape == (5, 10, 3)


def test_prediction_at_another_magnification_finds_the_cells_where_they_are(tmp_path):
    """A real PBC field enlarged 2x goes through predict.py resized back to the training scale: the
    same cells as on the field itself, reported at twice the coordinates."""
    from conftest import shared_dataset

    from wbc.inference import WBCAnalyzer
    from wbc.paths import DEFAULT_WEIGHTS
    from wbc.predict import predict

    field = cv2.imread(str(sorted((shared_dataset("pbc") / "images" / "val").glob("*.jpg"))[0]))
    source = tmp_path / "fields"
    source.mkdir()
    cv2.imwrite(str(source / "big.png"), cv2.resize(field, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR))
    cv2.imwrite(str(source / "same.png"), field)
    out = tmp_path / "out"
    predict(source, out, weights=DEFAULT_WEIGHTS, head=False, annotated=False, report=False, log=lambda *a: None)
    fields = {f["image"]: f for f in json.loads((out / "cells.json").read_text())}
    assert fields["big.png"]["rbc_diameter_px"] == pytest.approx(2 * fields["same.png"]["rbc_diameter_px"], rel=0.1)
    assert fields["big.png"]["scale_factor"] == pytest.approx(fields["same.png"]["scale_factor"] / 2, rel=0.1)
    own = WBCAnalyzer(DEFAULT_WEIGHTS, head=False)([field], [fields["same.png"]["scale_factor"]])[0]
    found = np.array([[c[k] for k in ("x1", "y1", "x2", "y2")] for c in fields["big.png"]["cells"]]) / 2
    assert len(own) > 5
    matched = [np.abs(found - np.array(c.box)).max(1).min() < 4 for c in own]
    assert np.mean(matched) > 0.8
    wbc = [c for c in fields["big.png"]["cells"] if c["class"] not in ("RBC", "PLT")]
    assert len(wbc) == 1  # PBC fields hold one WBC
