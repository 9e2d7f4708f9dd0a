"""test.py's evaluation: matching, per-cell table, attribute counts, COCOeval, batch-size invariance."""

import json

import numpy as np
import pandas as pd
import pytest

from wbc.evaluation import coco
from wbc.evaluation.cells import SplitCells, attribute_metrics, attridet_table, cell_table, class_confusion, operating_point
from wbc.inference import Cell
from wbc.schema import NOT_APPLICABLE, UNKNOWN

SIZE = {"name": "size", "values": ["small", "big"]}


def truth_rows(rows):
    """rows: (image, class, x1, y1, x2, y2, size code)."""
    return pd.DataFrame([{"split": "val", "image": r[0], "box": i, "class": r[1], "x1": r[2], "y1": r[3], "x2": r[4], "y2": r[5],
                          "size": r[6]} for i, r in enumerate(rows)])


def cell(box, cls, conf=0.9, size="small"):
    return Cell(tuple(map(float, box)), 0, cls, conf, {"size": (size, 0.8)})


def attridet_argmax_match(gt: np.ndarray, pred: np.ndarray) -> list[int]:
    """AttriDet's rule: every ground-truth box takes the prediction of highest IoU, at any IoU and any class."""
    import torch
    from torchvision.ops import box_iou

    return box_iou(torch.tensor(gt, dtype=torch.float32), torch.tensor(pred, dtype=torch.float32)).argmax(1).tolist()


def test_argmax_iou_rule_matches_a_wrong_box_and_ours_does_not():
    # a.jpg: two touching cells, one detected; b.jpg: a cell with no detection on it, an unrelated detection elsewhere
    truth = truth_rows([("a.jpg", "LY", 0, 0, 20, 20, 0), ("a.jpg", "MO", 16, 0, 36, 20, 1), ("b.jpg", "NE", 50, 50, 80, 80, 1)])
    cells = {"a.jpg": [cell((1, 0, 21, 20), "LY", size="small")], "b.jpg": [cell((0, 0, 10, 10), "RBC", size="big")]}
    result = SplitCells("val", truth, cells)

    # AttriDet: the MO box takes the LY detection a second time (IoU 0.14), the NE box takes a detection it does not touch (IoU 0)
    assert attridet_argmax_match(truth[["x1", "y1", "x2", "y2"]].to_numpy(float)[:2], np.array([cells["a.jpg"][0].box])) == [0, 0]
    assert attridet_argmax_match(truth[["x1", "y1", "x2", "y2"]].to_numpy(float)[2:], np.array([cells["b.jpg"][0].box])) == [0]

    pairs = result.matches(0.5)
    assert [(p.image, p.truth, p.cell) for p in pairs] == [("a.jpg", 0, 0)]
    table = cell_table(result, pairs, [SIZE], ["size"])
    assert list(table["gt_class"]) == ["LY", "MO", "NE", ""]  # 3 truth rows, then the unmatched RBC detection
    assert list(table["pred_class"]) == ["LY", "", "", "RBC"]
    assert table.loc[1, "size"] == "big" and table.loc[1, "pred_size"] == ""  # a miss carries no predicted attribute
    scores = attribute_metrics(result, pairs, [SIZE])
    s = scores["per_attribute"]["size"]
    assert (scores["matched"], scores["missed"], s["known"], s["missed"], s["accuracy"]) == (1, 2, 1, 2, 1.0)
    # AttriDet's test.csv layout holds the matched box only
    assert attridet_table(table, [SIZE]).to_dict("list") == {"filename": ["a.jpg"], "size": [0], "pred_size": [0]}


def test_class_aware_matching_refuses_a_misclassified_cell_that_class_agnostic_matching_shows():
    truth = truth_rows([("c.jpg", "LY", 0, 0, 30, 30, 0)])
    result = SplitCells("val", truth, {"c.jpg": [cell((0, 0, 30, 31), "MO")]})
    agnostic, aware = result.matches(0.5, class_aware=False), result.matches(0.5, class_aware=True)
    assert len(agnostic) == 1 and aware == []
    op = operating_point(result, aware, ["LY", "MO"])
    assert op["per_class"]["LY"]["fn"] == 1 and op["per_class"]["MO"]["fp"] == 1 and op["tp"] == 0
    counts, rows, cols = class_confusion(result, agnostic, ["LY", "MO"])
    assert counts[rows.index("LY"), cols.index("MO")] == 1 and counts.sum() == 1


def test_unknown_and_not_applicable_values_are_excluded_and_counted():
    truth = truth_rows([("d.jpg", "LY", 0, 0, 10, 10, UNKNOWN), ("d.jpg", "RBC", 20, 0, 30, 10, NOT_APPLICABLE),
                        ("d.jpg", "LY", 40, 0, 50, 10, 0), ("d.jpg", "LY", 60, 0, 70, 10, 1)])
    cells = [cell((0, 0, 10, 10), "LY", size="big"), cell((20, 0, 30, 10), "RBC", size="big"),
             cell((40, 0, 50, 10), "LY", size="small"), cell((60, 0, 70, 10), "LY", size="small")]
    result = SplitCells("val", truth, {"d.jpg": cells})
    scores = attribute_metrics(result, result.matches(0.5), [SIZE])
    s = scores["per_attribute"]["size"]
    assert (s["known"], s["unknown"], s["not_applicable"], s["missed"]) == (2, 1, 1, 0)
    assert s["accuracy"] == 0.5 and scores["ground_truth_boxes_with_attributes"] == 2
    assert {v: p["support"] for v, p in s["per_value"].items()} == {"small": 1, "big": 1}
    table = cell_table(result, result.matches(0.5), [SIZE], ["size"])
    assert list(table["size"]) == ["(unknown)", "(n/a)", "small", "big"]


def test_cocoeval_scores_hand_built_detections():
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 70, 20, 20], "area": 400, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "LY"}, {"id": 2, "name": "RBC"}, {"id": 3, "name": "PLT"}]}
    exact = [{"image_id": 1, "category_id": c, "bbox": b, "score": 0.9} for c, b in ((1, [10, 10, 50, 50]), (2, [0, 70, 20, 20]))]
    assert coco.evaluate(gt, exact)["mAP50-95"] == pytest.approx(1.0)
    # IoU 0.6 for LY (50x30 inside 50x50): a true positive at thresholds 0.50, 0.55, 0.60 only
    shifted = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 30], "score": 0.9}, exact[1]]
    r = coco.evaluate(gt, shifted)
    assert r["per_class"]["LY"]["mAP50"] == pytest.approx(1.0) and r["per_class"]["LY"]["mAP50-95"] == pytest.approx(0.3)
    assert set(r["per_class"]) == {"LY", "RBC"}  # PLT has no ground truth: left out, as COCOeval does
    assert r["mAP50-95"] == pytest.approx((0.3 + 1.0) / 2) and r["per_class"]["LY"]["AR"] == pytest.approx(0.3)


def test_class_map_merges_model_classes_drops_unmapped_ones_and_rejects_incomplete_maps(tmp_path):
    import torch

    from wbc.class_map import load_class_map
    from wbc.errors import UsageError

    path = tmp_path / "map.yaml"
    path.write_text("BNE: WBC\nSNE: WBC\nERB: null\nRBC: RBC\n")
    cmap = load_class_map(path, ["BNE", "ERB", "RBC", "SNE"], ["RBC", "WBC"])
    # one cell called BNE (0.9) and SNE (0.6) by the model is one WBC; the ERB detection is dropped
    det = torch.tensor([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 11, 0.6, 3], [20, 20, 30, 30, 0.8, 1], [40, 40, 50, 50, 0.7, 2]])
    assert torch.equal(cmap.apply(det, 0.7), torch.tensor([[0, 0, 10, 10, 0.9, 1], [40, 40, 50, 50, 0.7, 0]]))
    path.write_text("BNE: WBC\nRBC: Red\n")
    with pytest.raises(UsageError, match=r"not mapped .*\['ERB', 'SNE'\].*not classes of the dataset: \{'RBC': 'Red'\}"):
        load_class_map(path, ["BNE", "ERB", "RBC", "SNE"], ["RBC", "WBC"])


def test_test_py_output_is_the_same_for_batch_1_and_8(trained, tmp_path):
    from wbc.evaluation.evaluate import evaluate

    data, weights, result = trained
    head = result["save_dir"] / "head.pt"
    # the briefly trained detector only finds field-sized boxes at low confidence (IoU ~0.07 with a WBC):
    # a low confidence and match IoU give every field cells and matches to compare
    runs = {b: evaluate(weights, data, tmp_path / f"b{b}", batch=b, conf=0.001, match_iou=0.05, head=head, plots=b == 8, attridet_csv=True,
                        log=lambda s: None) for b in (1, 8)}
    csv1, csv8 = ((tmp_path / f"b{b}" / "attributes.csv").read_text() for b in (1, 8))
    table = pd.read_csv(tmp_path / "b8" / "attributes.csv", keep_default_na=False)
    assert csv1 == csv8 and (table["pred_class"] != "").sum() > 30 and {"pred_cell_size", "prob_cell_size"} <= set(table.columns)
    assert (table["gt_class"] != "").sum() == len(json.loads((tmp_path / "b8" / "coco_ground_truth.json").read_text())["annotations"])
    assert runs[8]["attributes"]["class_agnostic"]["matched"] > 0
    for key in ("attributes", "operating_point", "field_accuracy"):
        assert json.dumps(runs[1][key]) == json.dumps(runs[8][key]), key
    for name in ("metrics.json", "summary.md", "test.csv", "class_confusion.png", "field_confusion.png", "confusion_matrix.png", "BoxPR_curve.png"):
        assert (tmp_path / "b8" / name).is_file(), name
    metrics = json.loads((tmp_path / "b8" / "metrics.json").read_text())
    assert metrics["detection"]["agreement"]["mAP50-95"] < 0.02 and "field_accuracy" in metrics
    assert "## Attributes of matched boxes" in (tmp_path / "b8" / "summary.md").read_text()


def test_a_checkpoint_without_head_is_evaluated_for_detection_alone(trained, tmp_path):
    from wbc.errors import DatasetError
    from wbc.evaluation.evaluate import evaluate

    data, weights, _ = trained
    result = evaluate(weights, data, tmp_path / "det", conf=0.01, head=False, plots=False, log=lambda s: None)
    table = pd.read_csv(tmp_path / "det" / "attributes.csv", keep_default_na=False)
    assert "attributes" not in result and "cell_size" in table.columns
    assert not [c for c in table.columns if c.startswith("prob_")]
    with pytest.raises(DatasetError, match="no split 'nosuch'"):
        evaluate(weights, data, tmp_path / "x", split="nosuch", head=False, log=lambda s: None)



def test_a_test_only_dataset_scores_as_the_same_fields_do_as_val(trained, tmp_path):
    """A yaml declaring only ``test:`` (no train or val, which ultralytics' data yaml requires) is
    evaluated, with the numbers of the same fields evaluated as the val split of the original."""
    from pathlib import Path

    import yaml

    from wbc.evaluation.evaluate import evaluate

    data, weights, _ = trained
    raw = yaml.safe_load(Path(data).read_text())
    test_only = {**{k: v for k, v in raw.items() if k not in ("train", "val")}, "name": "test_only", "test": raw["val"],
                 "source": {**raw.get("source", {}), "annotations": "annotations/instances_val.json"}}
    (tmp_path / "test_only.yaml").write_text(yaml.safe_dump(test_only, sort_keys=False))
    run = {split: evaluate(weights, str(y), tmp_path / split, split=split, head=False, plots=False, log=lambda s: None)
           for split, y in (("val", data), ("test", tmp_path / "test_only.yaml"))}
    assert run["test"]["images"] == run["val"]["images"] == 30
    assert json.dumps(run["test"]["detection"]) == json.dumps(run["val"]["detection"])
    assert json.dumps(run["test"]["operating_point"]) == json.dumps(run["val"]["operating_point"])

def test_grouped_field_accuracy_counts_a_class_of_the_same_group_as_right():
    from wbc.field_accuracy import grouped_accuracy

    confusion = {"BNE": {"SNE": 3, "BNE": 1}, "MY": {"PMY": 1, "EO": 1}, "EO": {"EO": 2}}
    groups = {"NE": ["BNE", "SNE"], "IG": ["MMY", "MY", "PMY"]}
    assert grouped_accuracy(confusion, groups) == pytest.approx(7 / 8)
    assert grouped_accuracy(confusion, {}) == pytest.approx(3 / 8)


def test_a_label_audit_corrects_the_ground_truth_and_refuses_what_it_cannot_match(tmp_path):
    from wbc.errors import DatasetError
    from wbc.evaluation.audit import apply_audit, read_audit

    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "WBC"}, {"id": 2, "name": "RBC"}]}
    audit = tmp_path / "audit.csv"
    audit.write_text("image,class,x1,y1,x2,y2,verdict,note\n"
                     "a.jpg,WBC,0,0,20,20,not_this_class,a red cell\n"
                     "a.jpg,WBC,10,60,40,90,unlabelled,\n")
    corrected, counts = apply_audit(gt, read_audit(audit), audit)
    assert counts == {"not_this_class": 1, "duplicate": 0, "unlabelled": 1}
    assert sorted(a["bbox"] for a in corrected["annotations"]) == [[10.0, 60.0, 30.0, 30.0], [50, 50, 30, 30]]
    assert len(gt["annotations"]) == 2  # the published labels are left as they are

    audit.write_text("image,class,x1,y1,x2,y2,verdict\na.jpg,WBC,60,0,80,20,duplicate\n")
    with pytest.raises(DatasetError, match=r"audit.csv:2: no WBC box of a.jpg matches"):
        apply_audit(gt, read_audit(audit), audit)
    audit.write_text("image,class,x1,y1,x2,y2,verdict\na.jpg,WBC,0,0,20,20,wrong\n")
    with pytest.raises(DatasetError, match=r"audit.csv:2: verdict 'wrong'"):
        read_audit(audit)
    audit.write_text("image,class,x1,y1,x2,y2,verdict\nb.jpg,WBC,0,0,20,20,duplicate\n")
    with pytest.raises(DatasetError, match=r"audit.csv:2: image b.jpg is not in this split"):
        apply_audit(gt, read_audit(audit), audit)
