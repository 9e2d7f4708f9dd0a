"""The review decision (wbc.review): OOD scores, calibration, the stored operating point, and how
predict.py applies it."""

import csv
import shutil

import numpy as np
import pytest
import torch

from wbc.review.calibration import ece, fit_temperature, reliability
from wbc.review.decision import LOW_PROBABILITY, UNFAMILIAR, choose_operating_point, flag_rate
from wbc.review.model import ReviewModel, review_path_for
from wbc.review.scores import Mahalanobis, NearestNeighbours, auroc, energy


def clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[4.0] * 8 + [0.0] * 8, [0.0] * 8 + [4.0] * 8, [-4.0] * 16])
    labels = torch.arange(n) % 3
    return centres[labels] + torch.randn(n, 16, generator=g), labels


def test_an_ood_point_scores_above_every_in_distribution_point():
    train, labels = clusters(600, 0)
    held_out, _ = clusters(300, 1)
    ood = torch.tensor([[4.0] * 4 + [-4.0] * 4 + [4.0] * 4 + [-4.0] * 4])  # between and away from the three clusters
    for scorer in (Mahalanobis.fit(train, labels), NearestNeighbours.fit(train, k=5)):
        inside, outside = scorer.score(held_out), scorer.score(ood)
        assert outside.item() > inside.max().item(), type(scorer).__name__
    assert auroc(np.zeros(5), np.ones(3)) == 1.0 and auroc(np.ones(5), np.zeros(3)) == 0.0 and auroc(np.ones(2), np.ones(2)) == 0.5
    assert energy(torch.tensor([[9.0, 0.0]]))[0] < energy(torch.tensor([[0.1, 0.0]]))[0]  # strong evidence: low energy


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    g = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 5, generator=g) * 1.5
    labels = torch.multinomial(true_logits.softmax(1), 1, generator=g)[:, 0]
    logits = 4 * true_logits  # the same ranking, four times too sure
    t = fit_temperature(logits, labels)
    p_before, p_after = logits.softmax(1), (logits / t).softmax(1)
    correct = (logits.argmax(1) == labels).numpy()
    before, after = ece(p_before.max(1).values.numpy(), correct), ece(p_after.max(1).values.numpy(), correct)
    assert 3 < t < 5 and before > 0.15 and after < 0.03 and after < before / 4
    assert (p_after.argmax(1) == p_before.argmax(1)).all()  # the class never changes
    rows = reliability(p_after.max(1).values.numpy(), correct, bins=10)
    assert sum(r["cells"] for r in rows) == 4000 and len(rows) == 10


def test_the_operating_point_flags_the_chosen_share_of_known_cells():
    rng = np.random.default_rng(0)
    p, ood = rng.uniform(0.2, 1, 5000), rng.normal(0, 1, 5000)
    op = choose_operating_point(p, ood, 0.05)
    assert 0.045 <= flag_rate(op, p, ood) <= 0.05
    assert flag_rate(choose_operating_point(p, ood, 0.2), p, ood) > flag_rate(op, p, ood)
    assert op.reason(op.min_type_probability - 0.01, op.max_ood - 1) == LOW_PROBABILITY
    assert op.reason(op.min_type_probability + 0.01, op.max_ood + 1) == UNFAMILIAR
    assert op.reason(op.min_type_probability - 0.01, op.max_ood + 1) == f"{LOW_PROBABILITY} + {UNFAMILIAR}"
    assert op.reason(1.0, -10) == ""
    # weights: a source with few cells counts as much as one with many
    source = np.r_[np.zeros(4500), np.ones(500)]
    weights = np.where(source == 0, 1 / 4500, 1 / 500)
    ood_b = np.where(source == 1, ood + 1.5, ood)
    weighted = choose_operating_point(p, ood_b, 0.05, weights)
    assert abs(flag_rate(weighted, p, ood_b, weights) - 0.05) < 0.005
    with pytest.raises(ValueError, match="review rate"):
        choose_operating_point(p, ood, 1.5)


def test_a_review_model_saves_and_loads_with_weights_only(tmp_path):
    train, labels = clusters(300, 0)
    rng = np.random.default_rng(0)
    model = ReviewModel(["A", "B", "C"], [0, 1, 2], temperature=2.0, knn=NearestNeighbours.fit(train), ood=["knn", "mahalanobis"],
                        mahalanobis=Mahalanobis.fit(train, labels), spread={"knn": (0.1, 0.2), "mahalanobis": (10.0, 5.0)},
                        known={"type_probability": rng.uniform(0, 1, 200), "ood": rng.normal(0, 1, 200), "weight": np.ones(200)})
    model.save(tmp_path / "m.review.pt")
    loaded = ReviewModel.load(tmp_path / "m.review.pt")
    scores = torch.rand(4, 5)
    for a, b in zip(model.score(train[:4], scores), loaded.score(train[:4], scores)):
        assert torch.allclose(a.float(), b.float(), atol=1e-3)
    assert loaded.operating_point() == model.operating_point()
    assert loaded.operating_point(0.3).min_type_probability > loaded.operating_point().min_type_probability
    assert review_path_for("w/best.pt").name == "best.review.pt"


@pytest.fixture(scope="module")
def reviewed(trained, tmp_path_factory):
    """The generated-data detector with a review model fitted on its own train / val cells."""
    from wbc.canonical import prepare
    from wbc.inference import WBCAnalyzer
    from wbc.review.fit import fit_review
    from wbc.review.gather import gather

    data, weights, _ = trained
    root = tmp_path_factory.mktemp("reviewed")
    shutil.copy(weights, root / "best.pt")
    canonical = prepare(data)
    analyzer = WBCAnalyzer(root / "best.pt", head=False, conf=0.001, review=False, keep_evidence=True)
    # the briefly trained detector boxes cells loosely: match at a low IoU (this tests the plumbing, not accuracy)
    train, val = gather(analyzer, canonical, "train", match_iou=0.05), gather(analyzer, canonical, "val", match_iou=0.05)
    names = list(analyzer.model_names.values())
    model, report = fit_review(train, val, names, list(canonical.spec.wbc_classes), ood=["knn", "mahalanobis"], review_rate=0.2)
    model.save(review_path_for(root / "best.pt"))
    return data, root / "best.pt", model, report, val


def test_fitting_reports_calibration_and_flag_rates(reviewed):
    _, _, model, report, val = reviewed
    assert len(val.cells) > 10 and val.features.shape[0] == len(val.cells)
    assert report["per_origin"]["all"]["cells"] == len(val.cells)
    assert abs(report["per_origin"]["all"]["flag_rate"] - 0.2) < 0.1
    typed = report["per_origin"]["all"]["type"]
    assert 0 <= typed["ece_after"] <= 1 and typed["typed_cells"] > 0
    assert model.temperature > 0


def test_predict_applies_the_stored_operating_point(reviewed, tmp_path):
    from wbc.canonical import prepare
    from wbc.predict import predict

    data, weights, model, _, _ = reviewed
    images = prepare(data).root / "images" / "val"
    flagged = {}
    for rate in (None, 0.5):
        out = tmp_path / f"rate{rate}"
        summary = predict(images, out, weights=weights, head=False, conf=0.001, review_rate=rate, annotated=False, report=rate is None, log=lambda s: None)
        op = model.operating_point(rate)
        assert summary["review"]["min_type_probability"] == pytest.approx(op.min_type_probability)
        rows = list(csv.DictReader((out / "cells.csv").open()))
        wbc = [r for r in rows if r["class"] in summary["wbc_classes"]]
        assert wbc and all(r["type_probability"] != "" for r in wbc)
        for r in wbc:
            p, ood = float(r["type_probability"]), float(r["ood"])
            if abs(p - op.min_type_probability) < 1e-3 or abs(ood - op.max_ood) < 1e-2:
                continue  # cells.csv rounds the scores: too close to a threshold to tell
            expected = op.reason(p, ood)
            assert r["review"] == expected  # the reason is the stored operating point's
            assert (r["bin"] == "unidentified") == bool(expected)
        flagged[rate] = sum(r["bin"] == "unidentified" for r in wbc)
    assert flagged[0.5] >= flagged[None]
    assert "operating point" in (tmp_path / "rateNone" / "report.html").read_text()


def test_differential_error_with_and_without_the_unidentified_bin():
    from wbc.evaluation.differential_error import differential_error

    truth = {"a": ["LY", "LY", "NE", "NE"], "b": ["MO"]}
    predicted = {"a": ["LY", "LY", "NE", "unidentified"], "b": ["LY"]}
    r = differential_error(truth, predicted, ["LY", "MO", "NE"])
    # field a: unidentified as error -> NE 25% vs 50%; identified only -> LY 66.7%, NE 33.3%; field b: all wrong
    assert r["unidentified_as_error"]["per_field"]["NE"] == pytest.approx(25 / 2)
    assert r["identified_only"]["per_field"]["LY"] == pytest.approx((100 * 2 / 3 - 50 + 100) / 2)
    assert r["unidentified_as_error"]["pooled"]["MO"] == pytest.approx(20)
    assert r["unidentified_share"] == pytest.approx(0.2)


def test_the_evidence_cache_follows_the_attribute_head(tmp_path):
    """Cached evidence holds the attribute head's probabilities: another head, or the same file
    rewritten, must not read the old cache."""
    import os

    from wbc.review.gather import _key

    weights, data, head = (tmp_path / n for n in ("best.pt", "data.yaml", "best.attributes.pt"))
    for p in (weights, data, head):
        p.write_bytes(b"x")
    without, with_head = _key(weights, data, None), _key(weights, data, head)
    assert without != with_head and with_head == _key(weights, data, head)
    os.utime(head, ns=(head.stat().st_atime_ns, head.stat().st_mtime_ns + 10**9))
    assert _key(weights, data, head) != with_head


def test_a_type_heads_share_enters_the_type_probability():
    """With ``head_share`` the calibrated type probability is the fused distribution's
    (wbc.type_fusion) over the temperature; without the head's probabilities, the detector's alone."""
    from wbc.review.model import ReviewModel
    from wbc.type_fusion import fused_log_probabilities

    scores = torch.tensor([[0.7, 0.2, 0.6, 0.05]])  # three typed classes and a red cell
    head = torch.tensor([[0.1, 0.3, 0.6]])
    model = ReviewModel(["A", "B", "C"], [0, 1, 2], temperature=1.5, head_share=0.25)
    expected = (fused_log_probabilities(scores[:, :3], head, 0.25) / 1.5).softmax(1).float()
    assert torch.allclose(model.type_probabilities(scores, head_probabilities=head), expected)
    detector = ReviewModel(["A", "B", "C"], [0, 1, 2], temperature=1.5)
    assert torch.allclose(model.type_probabilities(scores), detector.type_probabilities(scores))
    assert torch.allclose(detector.type_probabilities(scores), (detector.type_logits(scores) / 1.5).softmax(1), atol=1e-6)


def test_the_onnx_export_carries_the_review_decision(reviewed, tmp_path):
    """The exported graph outputs the review model's evidence: onnxruntime gives each cell the same
    type probability, OOD score and "unidentified" reason as PyTorch."""
    pytest.importorskip("onnxruntime")
    import cv2

    from wbc.canonical import prepare
    from wbc.export import OnnxAnalyzer, export_onnx
    from wbc.inference import WBCAnalyzer

    data, weights, _, _, _ = reviewed
    written = export_onnx(weights, tmp_path / "model", head=False)
    assert "review" in written and (tmp_path / "model.review.pt").is_file()
    images = [cv2.imread(str(p)) for p in sorted((prepare(data).root / "images" / "val").iterdir())[:6]]
    for rate in (None, 0.5):
        on_torch = WBCAnalyzer(weights, head=False, conf=0.001, review_rate=rate, keep_evidence=True)
        on_onnx = OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001, review_rate=rate, keep_evidence=True)
        assert on_onnx.operating_point == on_torch.operating_point
        torch_cells, onnx_cells = on_torch(images), on_onnx(images)
        reviewed_cells = [(t, o) for row_t, row_o in zip(torch_cells, onnx_cells) for t, o in zip(row_t, row_o) if t.type_probability is not None]
        assert [len(r) for r in torch_cells] == [len(r) for r in onnx_cells] and len(reviewed_cells) > 5
        for t, o in reviewed_cells:
            assert o.type_probability == pytest.approx(t.type_probability, abs=1e-4)
            assert np.allclose(o.evidence["features"], t.evidence["features"], atol=1e-5)
            assert np.allclose(o.evidence["scores"], t.evidence["scores"], atol=1e-5)
            # the same evidence, scored by the same review model at the same operating point (this briefly trained
            # detector's scores sit on its thresholds and its OOD spread is near zero: float noise could flip a
            # comparison of the two paths' decisions, not the rule)
            assert o.review == on_onnx.operating_point.reason(o.type_probability, o.ood)
        assert any(o.review for _, o in reviewed_cells)
    bare = OnnxAnalyzer(tmp_path / "model.onnx", conf=0.001, review=False)(images)
    assert all(c.type_probability is None and not c.review for row in bare for c in row)
