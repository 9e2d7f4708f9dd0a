"""Typing by the detector's classes against typing by a type head, on hand-made cells."""

import math

import pandas as pd
import pytest

from wbc.attributes.data import CELL_TYPE
from wbc.evaluation.cells import SplitCells
from wbc.evaluation.typing import accuracy, matched_types, top_cell_types, truth_types
from wbc.inference import Cell
from wbc.schema import Attribute

WBC = ["BNE", "LY", "MO", "SNE"]


def cell(box, cls, conf, head=None):
    return Cell(box, 0, cls, conf, {CELL_TYPE: (head, 0.9)} if head else {})


def split_cells():
    truth = pd.DataFrame([
        {"image": "a.png", "class": "SNE", "x1": 0, "y1": 0, "x2": 10, "y2": 10, "subtype": 0},
        {"image": "a.png", "class": "RBC", "x1": 20, "y1": 20, "x2": 30, "y2": 30, "subtype": -1},
        {"image": "b.png", "class": "LY", "x1": 0, "y1": 0, "x2": 10, "y2": 10, "subtype": 1},
        {"image": "c.png", "class": "MO", "x1": 0, "y1": 0, "x2": 10, "y2": 10, "subtype": 2},
    ])
    cells = {
        "a.png": [cell((0, 0, 10, 10), "BNE", 0.8, "SNE"), cell((20, 20, 30, 30), "RBC", 0.9)],
        "b.png": [cell((50, 50, 60, 60), "MO", 0.9, "MO"), cell((0, 0, 10, 10), "LY", 0.6, "MO")],
        "c.png": [cell((0, 0, 10, 10), "RBC", 0.7)],  # the monocyte is taken for a red cell: no type from either
    }
    return SplitCells("val", truth, cells)


def test_both_typings_are_read_off_the_same_matched_cells():
    cells = split_cells()
    table = matched_types(cells, truth_types(cells, WBC))
    assert list(table["image"]) == ["a.png", "b.png", "c.png"]  # the red cell is not typed
    assert list(table["detector"]) == ["BNE", "LY", "RBC"] and list(table["head"]) == ["SNE", "MO", ""]
    assert accuracy(table, "detector") == pytest.approx(1 / 3) and accuracy(table, "head") == pytest.approx(1 / 3)
    assert accuracy(table, "detector", {"NE": ["BNE", "SNE"]}) == pytest.approx(2 / 3)
    assert math.isnan(accuracy(table.iloc[:0], "head"))


def test_per_field_the_top_wbc_cell_names_the_type():
    found = top_cell_types(split_cells(), WBC)
    detector, head = found["detector"], found["head"]
    assert detector == {"a.png": "BNE", "b.png": "MO"} and head == {"a.png": "SNE", "b.png": "MO"}  # c has no WBC-type cell


def test_a_truth_attribute_accepts_the_classes_it_maps_to():
    cells = split_cells()
    subtype = Attribute("subtype", ("NEUTROPHIL", "LYMPHOCYTE", "MONOCYTE"))
    members = {"NEUTROPHIL": ["BNE", "SNE"], "LYMPHOCYTE": ["LY"], "MONOCYTE": ["MO"]}
    table = matched_types(cells, truth_types(cells, WBC, subtype, members))
    assert list(table["truth"]) == [frozenset({"BNE", "SNE"}), frozenset({"LY"}), frozenset({"MO"})]
    assert accuracy(table, "detector") == pytest.approx(2 / 3) and accuracy(table, "head") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="MONOCYTE"):
        truth_types(cells, WBC, subtype, {"NEUTROPHIL": ["BNE"], "LYMPHOCYTE": ["LY"]})


def test_fusion_runs_from_the_detector_alone_to_the_head_alone():
    """Weight 0 is the detector's typed scores as a distribution, 1 the head's; between, the geometric
    mean decides where the two disagree, and a fused cell's type is read off its evidence."""
    import numpy as np

    from wbc.evaluation.typing import fused_probabilities, fused_type

    scores = np.array([[0.7, 0.6, 0.05]])
    head = np.array([[0.05, 0.4, 0.55]])
    logits = np.log(scores[0] / (1 - scores[0]))
    detector = np.exp(logits) / np.exp(logits).sum()
    assert np.allclose(fused_probabilities(scores, head, 0.0), detector, atol=1e-3)
    assert np.allclose(fused_probabilities(scores, head, 1.0), head)
    half = fused_probabilities(scores, head, 0.5)
    assert np.isclose(half.sum(), 1) and half.argmax() == 1  # each puts the other's favourite low: the middle class wins
    c = Cell((0, 0, 1, 1), 0, "BNE", 0.9, evidence={"scores": np.array([0.7, 0.6, 0.05, 0.3]), "attributes": {CELL_TYPE: head[0]}})
    assert fused_type(c, [0, 1, 2], ["BNE", "LY", "MO"], 0.0) == "BNE" and fused_type(c, [0, 1, 2], ["BNE", "LY", "MO"], 1.0) == "MO"
    assert fused_type(cell((0, 0, 1, 1), "BNE", 0.9), [0, 1, 2], ["BNE", "LY", "MO"], 0.5) == ""  # no evidence: no fused type


def test_a_cell_the_head_did_not_type_keeps_the_detectors_distribution():
    import torch

    from wbc.type_fusion import detector_log_probabilities, fused_log_probabilities

    scores = torch.tensor([[0.7, 0.6, 0.05], [0.2, 0.9, 0.1]])
    head = torch.tensor([[0.05, 0.4, 0.55], [float("nan")] * 3])
    fused = fused_log_probabilities(scores, head, 0.5)
    assert torch.allclose(fused[1], detector_log_probabilities(scores)[1:2][0]) and not torch.allclose(fused[0], detector_log_probabilities(scores)[0])
    assert torch.isfinite(fused).all()
