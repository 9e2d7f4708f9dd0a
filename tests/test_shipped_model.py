"""The shipped default model: loads offline, finds the field's WBC, and describes it."""

import cv2
import pytest

from conftest import shared_dataset
from wbc.paths import DEFAULT_WEIGHTS


@pytest.fixture(scope="module")
def analyzer():
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip(f"{DEFAULT_WEIGHTS} not present")
    from wbc.inference import WBCAnalyzer

    return WBCAnalyzer()


def test_default_model_card_and_head_are_shipped(analyzer):
    assert DEFAULT_WEIGHTS.with_suffix(".md").is_file()
    assert DEFAULT_WEIGHTS.stat().st_size < 15e6
    assert analyzer.head is not None and len(analyzer.attribute_specs) == 11


def test_default_model_describes_the_wbc_of_pbc_fields(analyzer):
    root = shared_dataset("pbc") / "images" / "val"
    names = ["EO_", "LY_", "SNE_"]
    images = [cv2.imread(str(next(root.glob(f"{n}*.jpg")))) for n in names]
    for cells in analyzer(images):
        wbc = [c for c in cells if c.class_name not in ("RBC", "PLT")]
        assert wbc, "no WBC found"
        assert set(max(wbc, key=lambda c: c.confidence).attributes) >= {"cell_size", "nucleus_shape", "granule_colour"}
