"""Clustering of cell crops (wbc.cluster): the scores, DEC, and cluster.py end to end on generated crops."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wbc.cluster.dec import dec, soft_assignment, target_distribution
from wbc.cluster.metrics import cluster_scores, hungarian_accuracy


def test_hungarian_accuracy_of_a_permutation_is_one():
    labels = np.array(["LY", "MO", "NE"] * 20)
    clusters = np.array([2, 0, 1] * 20)  # the same partition under other names
    accuracy, mapping = hungarian_accuracy(labels, clusters)
    assert accuracy == 1.0 and mapping == {2: "LY", 0: "MO", 1: "NE"}
    scores = cluster_scores(labels, clusters)
    assert scores["nmi"] == 1.0 and scores["ari"] == 1.0
    assert hungarian_accuracy(labels, np.zeros(60, int))[0] == 1 / 3  # one cluster: one label matched
    assert hungarian_accuracy(labels.astype(object), clusters) == (accuracy, mapping)  # e.g. a pandas column of names


def test_the_target_distribution_sharpens_the_assignment():
    g = torch.Generator().manual_seed(0)
    q = soft_assignment(torch.randn(200, 5, generator=g), torch.randn(4, 5, generator=g))
    p = target_distribution(q)
    entropy = lambda d: -(d * d.log()).sum(1).mean()  # noqa: E731
    assert torch.allclose(p.sum(1), torch.ones(200)) and entropy(p) < entropy(q)


def test_dec_recovers_separated_groups():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, (4, 16))
    labels = np.repeat(np.arange(4), 100)
    features = centres[labels] + rng.normal(0, 1, (400, 16))
    result = dec(features.astype(np.float32), 4, autoencoder=True, pretrain_epochs=10, steps=300)
    assert hungarian_accuracy(labels, result.clusters)[0] > 0.95
    for confidence in (result.confidence, result.kmeans_confidence):
        assert confidence.shape == (400,) and ((confidence > 0) & (confidence <= 1)).all()



def test_idec_keeps_the_reconstruction_and_recovers_separated_groups():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 80)
    features = (rng.normal(0, 6, (3, 12))[labels] + rng.normal(0, 1, (240, 12))).astype(np.float32)
    result = dec(features, 3, autoencoder=True, pretrain_epochs=10, steps=200, idec=0.1)
    assert hungarian_accuracy(labels, result.clusters)[0] > 0.95
    with pytest.raises(ValueError, match="autoencoder"):
        dec(features, 3, idec=0.1)


def test_cluster_py_writes_assignments_metrics_plot_and_gallery(synthetic, tmp_path, monkeypatch):
    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops
    from wbc.cluster import run

    write_crops(ground_truth_boxes(prepare(synthetic("coco")), ["train"]), tmp_path / "crops", CropOptions(size=32, classes=("LY", "MO", "NE")))
    monkeypatch.setenv("WBC_RUNS", str(tmp_path / "runs"))
    run.main(["--crops", str(tmp_path / "crops"), "--split", "train", "--encoder", "detector", "--k-range", "2", "4", "--name", "c"])
    out = tmp_path / "runs" / "cluster" / "c"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["k"] in (2, 3, 4) and set(metrics["silhouette"]) == {"2", "3", "4"}
    assert 0 <= metrics["dec"]["hungarian_accuracy"] <= 1 and set(metrics["labels"]) == {"LY", "MO", "NE"}
    rows = (out / "assignments.csv").read_text().splitlines()
    assert len(rows) == metrics["cells"] + 1 and rows[0] == "cell,label,predicted,kmeans,kmeans_confidence,dec,dec_confidence"
    assert metrics["view"] == "field"  # crop.py's manifest names every crop's field: the detector sees the cell there
    assert (out / "tsne.png").is_file() and "cluster" in (out / "gallery.html").read_text()


def test_crop_folder_cells_know_their_field_and_box(synthetic, tmp_path):
    import pandas as pd

    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops
    from wbc.cluster.cells import crop_folder_cells, in_fields

    write_crops(ground_truth_boxes(prepare(synthetic("coco")), ["train"]), tmp_path / "crops", CropOptions(size=32, classes=("LY", "MO")))
    cells = crop_folder_cells(tmp_path / "crops", "train")
    manifest = pd.read_csv(tmp_path / "crops" / "manifest.csv").set_index("file")
    assert in_fields(cells) and {c.label for c in cells} == {"LY", "MO"}
    for c in cells:
        row = manifest.loc[c.crop.relative_to(tmp_path / "crops").as_posix()]
        assert c.field == Path(row.source) and np.allclose(c.box, (row.x1, row.y1, row.x2, row.y2))
    (tmp_path / "crops" / "manifest.csv").unlink()  # a plain folder of crops: the detector can only see the crop
    assert not in_fields(crop_folder_cells(tmp_path / "crops", "train"))


def test_the_detector_sees_a_cell_differently_in_its_field_than_alone(synthetic, tmp_path):
    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops
    from wbc.cluster.cells import crop_folder_cells
    from wbc.cluster.embed import detector_embeddings
    from wbc.paths import DEFAULT_WEIGHTS

    write_crops(ground_truth_boxes(prepare(synthetic("coco")), ["val"]), tmp_path / "crops", CropOptions())
    cells = crop_folder_cells(tmp_path / "crops", "val")[:6]
    assert len(cells) == 6 and len({c.field for c in cells}) > 1
    field, alone = detector_embeddings(cells, DEFAULT_WEIGHTS, "field"), detector_embeddings(cells, DEFAULT_WEIGHTS, "crop")
    assert field.shape == alone.shape == (6, field.shape[1]) and np.isfinite(field).all()
    assert not np.allclose(field, alone, atol=1e-3)
    # in-field evidence is the cell's own: the same cell gives the same numbers in another batch of fields
    assert np.allclose(detector_embeddings(cells[::-1], DEFAULT_WEIGHTS, "field")[::-1], field, atol=1e-4)


def test_cluster_py_clusters_the_wbc_of_a_predict_run(synthetic, tmp_path, monkeypatch):
    from wbc.canonical import prepare
    from wbc.cluster import run
    from wbc.predict import predict

    images = prepare(synthetic("coco")).root / "images" / "train"
    predict(images, tmp_path / "pred", conf=0.01, review=False, log=lambda s: None)
    found = json.loads((tmp_path / "pred" / "cells.json").read_text())
    classes = sorted({c["class"] for entry in found for c in entry["cells"]})
    monkeypatch.setenv("WBC_RUNS", str(tmp_path / "runs"))
    run.main(["--predict", str(tmp_path / "pred"), "--classes", *classes, "--k", "2", "--encoder", "detector", "--name", "p"])
    out = tmp_path / "runs" / "cluster" / "p"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["view"] == "field" and metrics["cells"] == sum(len(entry["cells"]) for entry in found)
    assert "dec" not in metrics  # unlabelled: nothing to score against; what predict.py called the cells of each cluster instead
    per_cluster = metrics["predicted_by_cluster"]["kmeans"]
    assert sum(n for row in per_cluster.values() for n in row.values()) == metrics["cells"]
    rows = (out / "assignments.csv").read_text().splitlines()[1:]
    assert len(rows) == metrics["cells"] and all("#" in r.split(",")[0] for r in rows)
    assert (out / "gallery.html").read_text().count("<img") >= 2


def test_a_field_predict_py_would_tile_is_seen_as_a_window_around_each_cell():
    from wbc.cluster.embed import field_views

    rng = np.random.default_rng(0)
    field = rng.integers(0, 255, (1200, 1500, 3), np.uint8)
    boxes = [(100.0, 120.0, 160.0, 175.0), (1400.0, 1100.0, 1490.0, 1195.0)]
    whole = field_views(field[:300, :300], boxes[:1], [0], 1.0, 352)
    assert len(whole) == 1 and whole[0][0].shape == (300, 300, 3)  # small enough: the whole field, as predict.py runs it
    views = field_views(field, boxes, [0, 1], 2.0, 352)  # at 2x, 2400 x 3000: predict.py would tile it
    assert [v[2] for v in views] == [[0], [1]] and all(v[3] == 2.0 for v in views)
    for (window, inside, _, _), box in zip(views, boxes):
        assert abs(window.shape[0] - 176) <= 1 and abs(window.shape[1] - 176) <= 1  # a tile at the training scale
        x1, y1, x2, y2 = inside[0].round().astype(int)
        bx1, by1, bx2, by2 = (int(round(v)) for v in box)
        h, w = min(y2, window.shape[0]) - y1, min(x2, window.shape[1]) - x1
        assert (window[y1:y1 + h, x1:x1 + w] == field[by1:by1 + h, bx1:bx1 + w]).all()  # the same pixels, shifted
