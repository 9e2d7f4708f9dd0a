"""Whole-slide reading on a generated pyramidal TIFF: the level nearest the training scale, the
monolayer rule, every placed WBC found once in slide coordinates, the stop at a WBC count, and
predict.py end to end."""

import json

import cv2
import numpy as np
import pytest

from wbc.inference import Cell
from wbc.slide import is_slide, open_slide, plan_slide, sweep, to_slide
from wbc.synth_slide import SlideLayout, smear_field, write_slide

UPSCALE, MPP0 = 4.0, 7.5 / 144  # fields with 36 px red cells, enlarged 4x: 144 px at level 0, 72 px (0.104 µm/px) at level 1


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """(slide path, layout, the WBC centre of each field in field pixels)."""
    rng = np.random.default_rng(0)
    centres = [(int(x), int(y)) for x, y in rng.integers(70, 290, (12, 2))]
    fields = [smear_field(rng, 360, 36, c) for c in centres]  # 4x: 1440 px cells of the slide's grid
    layout = SlideLayout(fields, 12000, 8000, UPSCALE)
    path = write_slide(tmp_path_factory.mktemp("slide") / "smear.tif", layout, MPP0, levels=5)
    return path, layout, centres


class DarkNuclei:
    """Stands in for the detector: every dark violet blob is a WBC (BGR red channel below 100)."""

    def __call__(self, images, factors=None):
        out = []
        for im in images:
            n, _, stats, _ = cv2.connectedComponentsWithStats((im[..., 2] < 100).astype(np.uint8))
            out.append([Cell((float(x), float(y), float(x + w), float(y + h)), 0, "LY", 0.9) for x, y, w, h, area in stats[1:] if area > 50])
        return out


def test_a_pyramidal_tiff_is_a_slide_and_a_field_is_not(slide, tmp_path):
    cv2.imwrite(str(tmp_path / "field.tif"), smear_field(np.random.default_rng(1)))
    assert is_slide(slide[0]) and not is_slide(tmp_path / "field.tif")


def test_the_level_nearest_the_training_scale_is_read(slide):
    path, layout, _ = slide
    s = open_slide(path)
    plan = plan_slide(s, path, target_mpp=7.5 / 72, field_size=363, pixel_size=None)
    assert (plan.level, plan.mpp_from) == (1, "slide metadata")
    assert plan.factor == pytest.approx(1.0, abs=1e-3) and plan.core == 363
    plan = plan_slide(s, path, target_mpp=7.5 / 72 * 4.2, field_size=363, pixel_size=None)  # a model of 4x coarser fields
    assert plan.level == 3 and plan.factor == pytest.approx(2 ** 3 * MPP0 / (7.5 / 72 * 4.2))


def test_only_the_monolayer_is_analysed(slide):
    path, layout, _ = slide
    plan = plan_slide(open_slide(path), path, 7.5 / 72, 363, None)
    assert plan.kinds["thick"] > 0 and plan.kinds["glass or feathered edge"] > 0 and plan.kinds["monolayer"] > 0
    side = plan.core * plan.downsample
    for b in plan.blocks:  # every block analysed lies (mostly) in the monolayer zone: 25-75% of the width, no glass rows
        assert 0.25 * layout.width - side / 2 <= b.x and b.x + side / 2 <= 0.75 * layout.width
        assert layout.cell - side / 2 <= b.y <= layout.height - layout.cell - side / 2


def test_every_placed_wbc_is_found_once_at_its_slide_position(slide):
    path, layout, centres = slide
    s = open_slide(path)
    plan = plan_slide(s, path, 7.5 / 72, 363, None)
    found = [to_slide(c.box, f, plan) for f in sweep(s, plan, DarkNuclei(), lambda c: True, None, 4) for c in f.cells]
    found = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in found])
    side = plan.core * plan.downsample
    covered = [p for p in layout.placed if any(b.x <= p.x + centres[p.field][0] * UPSCALE < b.x + side and
                                                 b.y <= p.y + centres[p.field][1] * UPSCALE < b.y + side for b in plan.blocks)]
    assert len(covered) >= 0.8 * len(layout.placed)
    for p in covered:
        truth = np.array([p.x + centres[p.field][0] * UPSCALE, p.y + centres[p.field][1] * UPSCALE])
        near = np.linalg.norm(found - truth, axis=1) < 10
        assert near.sum() == 1, (p, near.sum())


def test_the_sweep_stops_at_the_target_wbc_count(slide):
    path, _, _ = slide
    s = open_slide(path)
    plan = plan_slide(s, path, 7.5 / 72, 363, None)
    fields = list(sweep(s, plan, DarkNuclei(), lambda c: True, 5, 2))
    counted = sum(len(f.cells) for f in fields)
    assert counted >= 5 and counted - len(fields[-1].cells) - len(fields[-2].cells) < 5 and len(fields) < len(plan.blocks)


def test_a_slide_without_a_pixel_size_is_scaled_from_its_red_cells(slide, tmp_path):
    from wbc.scale import estimate_scale

    _, layout, _ = slide
    path = write_slide(tmp_path / "no_mpp.tif", layout, MPP0, levels=5)
    s = open_slide(path)
    s.properties["tiffslide.mpp-x"] = None  # as a scanner that records none
    plan = plan_slide(s, path, 7.5 / 72, 363, None, estimate=lambda rgb: estimate_scale(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)).diameter_px)
    assert plan.mpp_from == "estimated from red cells" and plan.mpp0 == pytest.approx(MPP0, rel=0.1)


def test_predict_reads_a_slide_and_reports_slide_coordinates(slide, tmp_path):
    from wbc.predict import predict

    path, layout, _ = slide
    summary = predict(path, tmp_path / "out", slide_wbc=3, report=False, log=lambda s: None)
    (entry,) = json.loads((tmp_path / "out" / "cells.json").read_text())
    assert summary["images"] == 1 and entry["slide"]["level"] == 1 and entry["slide"]["fields_analysed"] >= 1
    assert (entry["width"], entry["height"]) == (layout.width, layout.height)
    assert all(0 <= c["x1"] < c["x2"] <= layout.width and 0 <= c["y1"] < c["y2"] <= layout.height for c in entry["cells"])
    assert (tmp_path / "out" / "annotated" / "smear_fields.jpg").is_file()
