"""Clustering of cell crops (wbc.cluster): the scores, DEC, and cluster.py end to end on generated crops."""

import json

import numpy as np
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
    assert result.confidence.shape == (400,) and ((result.confidence > 0) & (result.confidence <= 1)).all()


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
    assert len(rows) == metrics["crops"] + 1 and rows[0] == "crop,label,kmeans,dec,dec_confidence"
    assert (out / "tsne.png").is_file() and "cluster" in (out / "gallery.html").read_text()
