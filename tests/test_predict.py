"""predict.py: differential count, tiling of large fields, bad inputs, report.html in a browser."""

import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from wbc.differential import UNIDENTIFIED, differential, differential_table
from wbc.inference import Cell
from wbc.analysis import default_tile, model_cell_types


def cell(cls, conf, box=(0, 0, 10, 10)):
    return Cell(tuple(map(float, box)), 0, cls, conf)


def test_differential_counts_per_100_wbc_with_an_unidentified_bin():
    cells = {"a.jpg": [cell("LY", 0.9), cell("LY", 0.3), cell("NE", 0.8), cell("RBC", 0.9)], "b.jpg": [cell("NE", 0.95), cell("PLT", 0.2)]}
    d = differential(cells, ["LY", "NE"], review_conf=0.5)
    run = d["run"]
    assert run["wbc"] == 4 and run["other"] == {"PLT": 1, "RBC": 1}
    assert {k: v["count"] for k, v in run["per_class"].items()} == {"LY": 1, "NE": 2, UNIDENTIFIED: 1}
    assert run["per_class"]["NE"]["percent"] == 50.0
    assert d["per_image"]["b.jpg"]["wbc"] == 1 and d["per_image"]["a.jpg"]["per_class"][UNIDENTIFIED]["count"] == 1



def test_nucleated_red_cells_are_reported_per_100_wbc_outside_the_differential():
    cells = {"a.jpg": [cell("LY", 0.9), cell("NE", 0.8), cell("ERB", 0.9), cell("ERB", 0.3)], "b.jpg": [cell("NE", 0.95), cell("ERB", 0.7)]}
    run = differential(cells, ["ERB", "LY", "NE"], review_conf=0.5, nrbc_classes=["ERB"])["run"]
    # three confident WBC + the unsure ERB, which a reviewer must type: it stays in the n, like any unidentified cell
    assert run["wbc"] == 4 and set(run["per_class"]) == {"LY", "NE", UNIDENTIFIED}
    assert run["nrbc"] == {"ERB": {"count": 2, "per_100_wbc": 50.0}}
    assert run["per_class"]["NE"]["percent"] == 50.0 and run["other"] == {}
    assert "ERB 2 (50.0 per 100 WBC)" in differential_table(run)


def test_cell_types_and_tile_size_come_from_the_model_card(tmp_path):
    names = ["ERB", "LY", "RBC"]
    weights = tmp_path / "m.pt"
    assert model_cell_types(weights, names) == (names, []) and default_tile(weights, 256) == 384  # no card: every class, 1.5 x input
    weights.with_suffix(".json").write_text(json.dumps({"wbc_classes": ["ERB", "LY"], "nrbc_classes": ["ERB"], "train_field_size": 363}))
    assert model_cell_types(weights, names) == (["ERB", "LY"], ["ERB"]) and default_tile(weights, 256) == 3 * 363



def test_a_training_runs_checkpoint_takes_its_scale_from_the_run(tmp_path):
    """best.pt of a run that train.py rescaled fields for, before any model card: the run's scale
    record gives the scale inference must bring fields to. A card beside the weights wins."""
    from wbc.inference import model_card

    phase = tmp_path / "run" / "phase2"
    (phase / "weights").mkdir(parents=True)
    weights = phase / "weights" / "best.pt"
    assert model_card(weights) == {}
    (phase / "scale.json").write_text(json.dumps({"reference_origin": "PBC", "train_rbc_diameter_px": 72.5, "field_size": 363}))
    assert model_card(weights) == {"train_rbc_diameter_px": 72.5, "train_field_size": 363}
    data = tmp_path / "data.yaml"  # and its WBC types from the data yaml the run trained on
    data.write_text("names: [ERB, LY, RBC]\nwbc_classes: [ERB, LY]\nnrbc_classes: [ERB]\n")
    (phase / "args.yaml").write_text(f"data: {data}\nimgsz: 352\n")
    assert model_card(weights) == {"train_rbc_diameter_px": 72.5, "train_field_size": 363, "wbc_classes": ["ERB", "LY"], "nrbc_classes": ["ERB"]}
    assert model_cell_types(weights, ["ERB", "LY", "RBC"]) == (["ERB", "LY"], ["ERB"])
    assert model_card(tmp_path / "elsewhere.pt") == {}
    weights.with_suffix(".json").write_text(json.dumps({"train_rbc_diameter_px": 70.0}))
    assert model_card(weights) == {"train_rbc_diameter_px": 70.0}

class BlobDetector:
    """Stands in for the detector in the tiling test: every dark disc in a tile is a cell, including
    the part of a disc that a tile edge cuts, which is the case tiling must handle."""

    imgsz = 256

    def __call__(self, images, factors=None):
        out = []
        for im in images:
            n, _, stats, _ = cv2.connectedComponentsWithStats((im[..., 0] < 128).astype(np.uint8))
            out.append([Cell((float(x), float(y), float(x + w), float(y + h)), 0, "LY", 0.9) for x, y, w, h, _ in stats[1:]])
        return out


def test_a_4000x3000_field_is_tiled_without_losing_or_doubling_cells_at_seams():
    from wbc.tiling import analyze_tiled, tiles

    rng = np.random.default_rng(0)
    image = np.full((3000, 4000, 3), 230, np.uint8)
    windows = tiles(3000, 4000, 384, 128)
    # cells on every seam and corner of the tile grid, plus random ones elsewhere
    centres = {(x1 - 20, y0 + 60) for x0, y0, x1, y1 in windows if x1 < 4000} | {(x0 + 60, y1 - 15) for x0, y0, x1, y1 in windows if y1 < 3000}
    centres |= {(int(x), int(y)) for x, y in rng.uniform(40, [3960, 2960], (150, 2))}
    placed = []
    for x, y in sorted(centres):
        if all((x - px) ** 2 + (y - py) ** 2 > 60 ** 2 for px, py in placed):
            placed.append((x, y))
            cv2.circle(image, (x, y), 25, (60, 60, 60), -1)
    cells = analyze_tiled(BlobDetector(), image, tile=384, overlap=128)
    found = sorted((round((c.box[0] + c.box[2]) / 2), round((c.box[1] + c.box[3]) / 2)) for c in cells)
    assert len(found) == len(placed)
    for x, y in placed:  # each placed cell found once, where it was drawn
        assert sum(abs(x - fx) <= 1 and abs(y - fy) <= 1 for fx, fy in found) == 1, (x, y)
    assert all(50 <= c.box[2] - c.box[0] <= 52 for c in cells)  # whole cells, never a part cut by a seam


def test_the_default_tile_keeps_a_wbc_as_large_as_the_training_fields_largest_across_its_edges():
    """A cell cut by a tile edge is kept only from a tile that holds it whole, so the overlap must exceed
    a WBC: at the training scale PBC's WBCs reach 308 px. The default tile (3 training fields, 1,089 px,
    overlap 363) finds such a cell wherever a tile edge crosses it; one training field (363 px,
    overlap 121), the old default, loses it from every tile."""
    from wbc.paths import DEFAULT_WEIGHTS
    from wbc.tiling import analyze_tiled, tiles

    tile = default_tile(DEFAULT_WEIGHTS, 352)
    assert tile == 1089
    image = np.full((2400, 2400, 3), 230, np.uint8)
    x0, _, x1, _ = tiles(2400, 2400, tile, tile // 3)[1]  # the second tile of the first row: its left edge crosses the cell
    cv2.circle(image, (x0 + 40, 600), 150, (60, 60, 60), -1)
    assert [round(c.box[2] - c.box[0]) for c in analyze_tiled(BlobDetector(), image, tile, tile // 3)] == [301]
    assert analyze_tiled(BlobDetector(), image, 363, 121) == []


def write_bad_and_odd_files(folder, good):
    folder.mkdir()
    shutil.copy(good, folder / "good.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    cv2.imwrite(str(folder / "full.jpg"), cv2.imread(str(good)))
    (folder / "truncated.jpg").write_bytes((folder / "full.jpg").read_bytes()[:300])
    (folder / "full.jpg").unlink()
    image = cv2.imread(str(good))
    cv2.imwrite(str(folder / "deep.png"), image.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))


def test_bad_inputs_are_reported_and_skipped_and_odd_ones_converted(trained, tmp_path):
    from wbc.canonical import prepare
    from wbc.predict import predict

    data, weights, _ = trained
    good = sorted((prepare(data).root / "images" / "val").iterdir())[0]
    write_bad_and_odd_files(tmp_path / "in", good)
    summary = predict(tmp_path / "in", tmp_path / "out", weights=weights, conf=0.01, log=lambda s: None)
    assert (summary["images"], summary["skipped"], summary["converted"]) == (4, 3, 3)
    skipped = dict(line.split(",", 1) for line in (tmp_path / "out" / "skipped.csv").read_text().splitlines()[1:])
    reasons = {k.rsplit("/", 1)[-1]: v for k, v in skipped.items()}
    assert reasons["empty.jpg"] == "zero-byte file" and reasons["notes.txt"].startswith("not an image")
    assert reasons["truncated.jpg"].startswith("corrupt image")
    cells = json.loads((tmp_path / "out" / "cells.json").read_text())
    notes = {c["image"]: c["note"] for c in cells}
    assert notes["deep.png"] == "scaled to 8 bits" and notes["gray.png"] == "grayscale to 3 channels" and "alpha" in notes["rgba.png"]
    for name in ("cells.csv", "differential.json", "differential.md", "report.html", "summary.json", "annotated/good.jpg"):
        assert (tmp_path / "out" / name).is_file(), name


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_report_renders_the_differential_counts_in_headless_chromium(trained, tmp_path):
    from wbc.canonical import prepare
    from wbc.predict import predict

    data, weights, _ = trained
    predict(prepare(data).root / "images" / "val", tmp_path / "out", weights=weights, conf=0.001, review_conf=0.002, log=lambda s: None)
    diff = json.loads((tmp_path / "out" / "differential.json").read_text())["run"]
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", (tmp_path / "out" / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    run_table = re.search(r'<table data-table="run">(.*?)</table>', dom, re.S).group(1)
    shown = dict(re.findall(r'data-bin="([^"]+)" data-count="(\d+)"', run_table))
    expected = {k: str(v["count"]) for k, v in diff["per_class"].items() if v["count"]}
    assert shown == {**expected, "WBC": str(diff["wbc"])} and diff["wbc"] > 0
    assert dom.count("<figure") == diff["wbc"]  # every WBC-type cell has its crop in the gallery


def test_a_cell_scored_as_two_types_is_one_cell(monkeypatch):
    """ultralytics' NMS is per class: a cell scoring BNE 0.72 and SNE 0.57 would be counted twice.
    The analyzer's NMS is class-agnostic: one box per cell, of its best class."""
    import torch

    from wbc.inference import WBCAnalyzer
    from wbc.paths import DEFAULT_WEIGHTS

    analyzer = WBCAnalyzer(DEFAULT_WEIGHTS, head=False, rescale=False, review=False, types=False)  # a faked forward pass: no features for heads
    names = list(analyzer.names.values())
    raw = torch.zeros(1, 4 + len(names), 3)
    raw[0, :4, 0] = torch.tensor([100.0, 100.0, 80.0, 80.0])  # xywh: one cell
    raw[0, :4, 1] = torch.tensor([101.0, 100.0, 80.0, 78.0])  # the same cell, boxed a pixel off
    raw[0, :4, 2] = torch.tensor([250.0, 250.0, 40.0, 40.0])  # a red cell elsewhere
    raw[0, 4 + names.index("BNE"), 0], raw[0, 4 + names.index("SNE"), 1], raw[0, 4 + names.index("RBC"), 2] = 0.72, 0.57, 0.9
    monkeypatch.setattr(analyzer, "_forward", lambda x: (raw, {}))
    cells = analyzer([np.full((352, 352, 3), 200, np.uint8)])[0]
    assert sorted(c.class_name for c in cells) == ["BNE", "RBC"]


def test_a_cell_split_between_types_is_scored_as_some_wbc(monkeypatch):
    """An unfamiliar WBC splits its score between types (BNE 0.20, SNE 0.15, MY 0.10): no type reaches
    --conf 0.25, but the probability that it is some WBC type (noisy-OR, 0.388) does, so the cell is
    found, as its best type; a red cell scored RBC 0.20, PLT 0.15 is not a WBC and stays below.
    --max-type-score (some_type=False) scores each box by its best class alone."""
    import torch

    from wbc.inference import WBCAnalyzer
    from wbc.paths import DEFAULT_WEIGHTS

    analyzer = WBCAnalyzer(DEFAULT_WEIGHTS, head=False, rescale=False, review=False, types=False)
    names = list(analyzer.names.values())
    raw = torch.zeros(1, 4 + len(names), 8)
    raw[0, :4, 0], raw[0, :4, 1] = torch.tensor([100.0, 100.0, 80.0, 80.0]), torch.tensor([250.0, 250.0, 40.0, 40.0])
    for j, scores in ((0, {"BNE": 0.2, "SNE": 0.15, "MY": 0.1}), (1, {"RBC": 0.2, "PLT": 0.15})):
        for name, p in scores.items():
            raw[0, 4 + names.index(name), j] = p
    monkeypatch.setattr(analyzer, "_forward", lambda x: (raw, {}))
    field = [np.full((352, 352, 3), 200, np.uint8)]
    assert [(c.class_name, round(c.confidence, 3)) for c in analyzer(field)[0]] == [("BNE", 0.388)]
    analyzer.some_type = False
    assert analyzer(field)[0] == []


def test_a_cell_kept_only_as_some_wbc_must_look_like_the_training_cells(monkeypatch):
    """On a stain nobody trained on, red cells get many small type scores that add up. A box that no
    type of its own carries above --conf is kept only if the review model does not find it unlike the
    training cells; a box its best type carries stays whatever the review says (it goes to unidentified)."""
    import torch

    from wbc.inference import WBCAnalyzer
    from wbc.paths import DEFAULT_WEIGHTS
    from wbc.review.decision import UNFAMILIAR

    analyzer = WBCAnalyzer(DEFAULT_WEIGHTS, head=False, rescale=False, review=False, types=False)
    names = list(analyzer.names.values())
    raw = torch.zeros(1, 4 + len(names), 8)
    split = {"BNE": 0.2, "SNE": 0.15, "MY": 0.1}
    for j, (xywh, scores) in enumerate((([60, 60, 50, 50], split), ([200, 60, 50, 50], split), ([60, 200, 50, 50], {"LY": 0.6}))):
        raw[0, :4, j] = torch.tensor(xywh, dtype=torch.float32)
        for name, p in scores.items():
            raw[0, 4 + names.index(name), j] = p
    monkeypatch.setattr(analyzer, "_forward", lambda x: (raw, {}))
    # the review model's verdict, by the box's left edge: the second split cell and the lymphocyte look unfamiliar
    monkeypatch.setattr(analyzer, "evidence", object())
    monkeypatch.setattr(analyzer, "_review", lambda detections, rois, own, size: [
        (0.5, 1.0, UNFAMILIAR if float(r[1]) > 100 or float(r[2]) > 100 else "", None) for r in rois])
    cells = analyzer([np.full((352, 352, 3), 200, np.uint8)])[0]
    assert sorted((c.class_name, round(c.box[0]), c.review) for c in cells) == [("BNE", 35, ""), ("LY", 35, UNFAMILIAR)]


def test_a_rescue_the_familiarity_test_drops_does_not_take_its_cell_with_it(monkeypatch):
    """A cell boxed twice: a box its type carries (LY 0.30) and, a few pixels off, a box kept only as
    "some WBC type" (BNE 0.24, SNE 0.24, MY 0.2: 0.54). The second wins NMS; the review model finds it
    unfamiliar and it is dropped. The cell must then be found by its first box, as it is without the
    rescue (--max-type-score), not lost with the box that suppressed it."""
    import torch

    from wbc.inference import WBCAnalyzer
    from wbc.paths import DEFAULT_WEIGHTS
    from wbc.review.decision import UNFAMILIAR

    analyzer = WBCAnalyzer(DEFAULT_WEIGHTS, head=False, rescale=False, review=False, types=False)
    names = list(analyzer.names.values())
    raw = torch.zeros(1, 4 + len(names), 8)
    for j, (xywh, scores) in enumerate((([100, 100, 60, 60], {"LY": 0.30}), ([102, 100, 60, 60], {"BNE": 0.24, "SNE": 0.24, "MY": 0.2}),
                                        ([101, 101, 60, 58], {"RBC": 0.1, "EO": 0.2, "BA": 0.2}))):
        raw[0, :4, j] = torch.tensor(xywh, dtype=torch.float32)
        for name, p in scores.items():
            raw[0, 4 + names.index(name), j] = p
    monkeypatch.setattr(analyzer, "_forward", lambda x: (raw, {}))
    monkeypatch.setattr(analyzer, "evidence", object())
    # every box unfamiliar, as every cell of a stain nobody trained on can be
    monkeypatch.setattr(analyzer, "_review", lambda detections, rois, own, size: [(0.5, 1.0, UNFAMILIAR, None) for _ in rois])
    field = [np.full((352, 352, 3), 200, np.uint8)]
    assert [(c.class_name, round(c.confidence, 2)) for c in analyzer(field)[0]] == [("LY", 0.3)]
    analyzer.some_type = False
    assert [(c.class_name, round(c.confidence, 2)) for c in analyzer(field)[0]] == [("LY", 0.3)]


def test_a_cell_boxed_again_around_its_neighbour_is_one_cell(monkeypatch):
    """A lymphocyte boxed alone (MO 0.47) and again with the red cell beside it (MO 0.43): IoU 0.55, so
    NMS at 0.7 keeps both and the cell would be counted twice. The box lying wholly inside the other is
    dropped; a platelet on a red cell and two WBCs side by side stay."""
    import torch

    from wbc.inference import WBCAnalyzer, nested_duplicates
    from wbc.paths import DEFAULT_WEIGHTS

    analyzer = WBCAnalyzer(DEFAULT_WEIGHTS, head=False, rescale=False, review=False, types=False)
    names = list(analyzer.names.values())
    raw = torch.zeros(1, 4 + len(names), 8)  # 8 anchors: ultralytics takes a last dimension of 6 for end-to-end output
    boxes = {0: ([90, 90, 60, 60], "MO", 0.47), 1: ([80, 100, 80, 80], "MO", 0.43),  # the nested pair (xywh)
             2: ([250, 250, 40, 40], "RBC", 0.9), 3: ([250, 250, 8, 8], "PLT", 0.6),  # a platelet on a red cell
             4: ([200, 60, 50, 50], "LY", 0.8), 5: ([245, 60, 50, 50], "SNE", 0.7)}  # two WBCs touching
    for j, (xywh, name, score) in boxes.items():
        raw[0, :4, j] = torch.tensor(xywh, dtype=torch.float32)
        raw[0, 4 + names.index(name), j] = score
    monkeypatch.setattr(analyzer, "_forward", lambda x: (raw, {}))
    cells = analyzer([np.full((352, 352, 3), 200, np.uint8)])[0]
    assert sorted((c.class_name, round(c.confidence, 2)) for c in cells) == [("LY", 0.8), ("MO", 0.47), ("PLT", 0.6), ("RBC", 0.9), ("SNE", 0.7)]

    xyxy = torch.tensor([[0, 0, 100, 100], [10, 10, 60, 60], [0, 0, 100, 100]], dtype=torch.float32)
    everyone = torch.ones(3, dtype=torch.bool)
    # the inner box scoring higher keeps the inner box; the outer goes
    assert nested_duplicates(xyxy[:2], torch.tensor([0.4, 0.9]), everyone[:2], 0.8).tolist() == [True, False]
    assert nested_duplicates(xyxy[:2], torch.tensor([0.9, 0.4]), torch.tensor([True, False]), 0.8).tolist() == [False, False]
    assert nested_duplicates(xyxy, torch.tensor([0.9, 0.5, 0.8]), everyone, 1.0).tolist() == [False, False, False]
