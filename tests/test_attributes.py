"""The attribute head on generated fields whose attributes change what is visible."""

import shutil

import cv2

import numpy as np
import pytest
import torch

from wbc.attributes.head import AttributeHead, HeadConfig, attribute_loss
from wbc.attributes.metrics import attribute_scores, match_boxes
from wbc.schema import NOT_APPLICABLE, UNKNOWN


def test_masked_values_do_not_enter_the_loss():
    torch.manual_seed(0)
    logits = [torch.randn(4, 3, requires_grad=True), torch.randn(4, 2, requires_grad=True)]
    targets = torch.tensor([[0, 1], [UNKNOWN, 0], [2, NOT_APPLICABLE], [NOT_APPLICABLE, UNKNOWN]])
    loss = attribute_loss(logits, targets)
    expected = (torch.nn.functional.cross_entropy(logits[0][[0, 2]], torch.tensor([0, 2]))
                + torch.nn.functional.cross_entropy(logits[1][[0, 1]], torch.tensor([1, 0]))) / 2
    assert torch.allclose(loss, expected)
    loss.backward()
    assert logits[0].grad[[1, 3]].abs().sum() == 0 and logits[1].grad[[2, 3]].abs().sum() == 0
    all_masked = attribute_loss([torch.randn(2, 3, requires_grad=True)], torch.full((2, 1), UNKNOWN))
    assert float(all_masked.detach()) == 0


def test_head_checkpoint_is_self_describing_and_weights_only(tmp_path):
    cfg = HeadConfig(layers=[2, 4], in_channels=[32, 64], attributes=[{"name": "size", "values": ["small", "big"]}], imgsz=128)
    head = AttributeHead(cfg)
    head.save(tmp_path / "h.pt")
    raw = torch.load(tmp_path / "h.pt", weights_only=True)
    assert raw["config"]["attributes"][0]["values"] == ["small", "big"] and raw["config"]["layers"] == [2, 4]
    again = AttributeHead.load(tmp_path / "h.pt")
    features = [torch.randn(1, 32, 32, 32), torch.randn(1, 64, 16, 16)]
    boxes = torch.tensor([[0, 10.0, 10.0, 60.0, 70.0]])
    assert torch.equal(head.eval()(features, boxes, (128, 128))[0], again(features, boxes, (128, 128))[0])


def test_members_average_probabilities_and_learn_from_their_own_losses(tmp_path):
    torch.manual_seed(0)
    attributes = [{"name": "size", "values": ["small", "big"]}, {"name": "shape", "values": ["round", "oval", "odd"]}]
    cfg = HeadConfig(layers=[4], in_channels=[8], attributes=attributes, imgsz=128, members=3)
    head = AttributeHead(cfg).eval()
    features, boxes = [torch.randn(2, 8, 16, 16)], torch.tensor([[0, 10.0, 10.0, 60.0, 70.0], [1, 5.0, 30.0, 90.0, 80.0]])
    members = head.member_logits(features, boxes, (128, 128))
    assert len(members) == 3 and not torch.allclose(members[0][0], members[1][0])  # independently initialised
    for a, logits in enumerate(head(features, boxes, (128, 128))):
        mean = torch.stack([m[a].softmax(1) for m in members]).mean(0)
        assert torch.allclose(logits.softmax(1), mean, atol=1e-6)
    targets = torch.tensor([[0, 2], [1, UNKNOWN]])
    expected = torch.stack([attribute_loss(m, targets) for m in members]).mean()
    assert torch.allclose(head.loss(features, boxes, (128, 128), targets), expected)
    head.save(tmp_path / "h.pt")
    assert torch.equal(AttributeHead.load(tmp_path / "h.pt")(features, boxes, (128, 128))[1], head(features, boxes, (128, 128))[1])


def test_members_may_pool_different_layers(tmp_path):
    attributes = [{"name": "size", "values": ["small", "big"]}]
    cfg = HeadConfig(layers=[2, 4], in_channels=[8, 16], attributes=attributes, imgsz=128, members=[[4], [2, 4]])
    head = AttributeHead(cfg).eval()
    assert [b.reduce[0].in_channels for b in head.branches] == [16, 24]
    features, boxes = [torch.randn(1, 8, 32, 32), torch.randn(1, 16, 16, 16)], torch.tensor([[0, 10.0, 10.0, 60.0, 70.0]])
    before = head.member_logits(features, boxes, (128, 128))
    features[0] = features[0] + 1  # layer 2 reaches the second member only
    after = head.member_logits(features, boxes, (128, 128))
    assert torch.equal(before[0][0], after[0][0]) and not torch.allclose(before[1][0], after[1][0])
    head.save(tmp_path / "h.pt")
    assert torch.equal(AttributeHead.load(tmp_path / "h.pt")(features, boxes, (128, 128))[0], head(features, boxes, (128, 128))[0])
    with pytest.raises(ValueError, match="subset of layers"):
        AttributeHead(HeadConfig(layers=[2, 4], in_channels=[8, 16], attributes=attributes, members=[[6]]))


def test_a_head_saved_before_members_existed_still_loads(tmp_path):
    from dataclasses import asdict

    cfg = HeadConfig(layers=[4], in_channels=[8], attributes=[{"name": "size", "values": ["small", "big"]}], imgsz=128)
    head = AttributeHead(cfg).eval()
    old = {k.removeprefix("branches.0."): v for k, v in head.state_dict().items()}  # the single-branch layout
    config = {k: v for k, v in asdict(cfg).items() if k != "members"}
    torch.save({"config": config, "state_dict": old}, tmp_path / "old.pt")
    features, boxes = [torch.randn(1, 8, 16, 16)], torch.tensor([[0, 10.0, 10.0, 60.0, 70.0]])
    assert torch.equal(AttributeHead.load(tmp_path / "old.pt")(features, boxes, (128, 128))[0], head(features, boxes, (128, 128))[0])


@pytest.mark.parametrize("view", range(8))
def test_turned_fields_carry_their_boxes(synthetic, view):
    from wbc.attributes.data import AttributeFields
    from wbc.canonical import prepare

    canonical = prepare(synthetic("coco"))
    (image, boxes, codes), (turned, turned_boxes, same_codes) = AttributeFields(canonical, "train", 128)[0], AttributeFields(canonical, "train", 128, view)[0]
    assert np.array_equal(codes, same_codes) and turned.shape == image.shape
    x1, y1, x2, y2 = (int(round(v)) for v in boxes[0])
    tx1, ty1, tx2, ty2 = (int(round(v)) for v in turned_boxes[0])
    cell = image[y1:y2, x1:x2]
    if view >= 4:
        cell = cell[:, ::-1]
    assert np.array_equal(turned[ty1:ty2, tx1:tx2], np.rot90(cell, view % 4))


def test_random_views_vary(synthetic):
    from wbc.attributes.data import AttributeFields
    from wbc.canonical import prepare

    fields = AttributeFields(prepare(synthetic("coco")), "train", 128, view=None)
    torch.manual_seed(0)
    images = [fields[0][0] for _ in range(16)]
    assert len({im.tobytes() for im in images}) > 2


def test_box_jitter_follows_the_boxes_device():
    """Joint training on a GPU jitters boxes that live there; the noise comes from the CPU generator
    (the same draws on any device) and lands on the boxes' device. 'meta' stands in for cuda in CI."""
    from wbc.attributes.data import jitter_boxes

    boxes = torch.tensor([[0, 10.0, 10.0, 30.0, 40.0], [1, 50.0, 50.0, 90.0, 70.0]])
    on_cpu = jitter_boxes(boxes, 0.1, torch.Generator().manual_seed(0))
    assert not torch.equal(on_cpu, boxes) and torch.equal(on_cpu[:, 0], boxes[:, 0])
    assert (on_cpu[:, 1:] - boxes[:, 1:]).abs().max() <= 0.1 * 40
    assert torch.equal(on_cpu, jitter_boxes(boxes, 0.1, torch.Generator().manual_seed(0)))
    assert jitter_boxes(boxes.to("meta"), 0.1, torch.Generator().manual_seed(0)).device.type == "meta"


@pytest.mark.parametrize("spec, expected", [("cpu", "cpu"), (" CPU ", "cpu"), (torch.device("cpu"), "cpu")])
def test_device_strings_read_like_ultralytics(spec, expected):
    from wbc.device import torch_device

    assert torch_device(spec) == torch.device(expected)


@pytest.mark.parametrize("spec, message", [("0,1", "one device"), ("gpu", "not a device")])
def test_bad_device_strings_are_usage_errors(spec, message):
    from wbc.device import torch_device
    from wbc.errors import UsageError

    with pytest.raises(UsageError, match=message):
        torch_device(spec)


def test_a_gpu_index_means_cuda(monkeypatch):
    from wbc.device import torch_device
    from wbc.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_device("0") == torch_device("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="CUDA is not available"):
        torch_device("0")


def test_box_size_reaches_the_head_only_when_configured():
    """On a uniform feature map RoIAlign pools the same values for any box: only the box-size input can tell sizes apart."""
    features = [torch.ones(1, 8, 16, 16)]
    boxes = torch.tensor([[0, 10.0, 10.0, 30.0, 30.0], [0, 10.0, 10.0, 90.0, 90.0]])
    outputs = {}
    for box_size in (False, True):
        torch.manual_seed(0)
        cfg = HeadConfig(layers=[4], in_channels=[8], attributes=[{"name": "size", "values": ["small", "big"]}], imgsz=128, box_size=box_size)
        outputs[box_size] = AttributeHead(cfg).eval()(features, boxes, (128, 128))[0]
    assert torch.allclose(outputs[False][0], outputs[False][1])
    assert not torch.allclose(outputs[True][0], outputs[True][1])


def test_matching_is_one_to_one_and_thresholded():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    pred = np.array([[0, 0, 10, 11], [1, 1, 10, 10], [50, 50, 60, 60]], float)
    assert [(g, p) for g, p, _ in match_boxes(gt, pred, 0.5)] == [(0, 0)]  # the second GT has no prediction at IoU >= 0.5


def test_attribute_scores_exclude_unknown():
    s = attribute_scores(np.array([0, 1, 1, UNKNOWN, NOT_APPLICABLE]), np.array([0, 1, 0, 1, 1]), 2)
    assert (s["known"], s["excluded"]) == (3, 2) and s["accuracy"] == pytest.approx(2 / 3)
    assert s["macro_f1"] == pytest.approx(2 / 3)  # value 0: P 1/2 R 1; value 1: P 1 R 1/2


def test_briefly_trained_head_beats_the_majority_value(trained):
    import json

    from wbc.canonical import prepare

    data, _, result = trained
    canonical = prepare(data)
    table, names = canonical.attributes(), [a.name for a in canonical.spec.used_attributes]
    train_rows, val_rows = table[table["split"] == "train"], table[table["split"] == "val"]
    baseline = []
    for n in names:
        majority = train_rows[train_rows[n] >= 0][n].mode()[0]
        known = val_rows[val_rows[n] >= 0][n]
        baseline.append(float((known == majority).mean()))
    metrics = json.loads((result["save_dir"] / "metrics.json").read_text())["val_on_ground_truth_boxes"]
    assert metrics["mean_accuracy"] > np.mean(baseline) + 0.1, (metrics["mean_accuracy"], baseline)


def test_analyzer_gives_every_box_its_attributes_in_one_detector_pass(trained):
    import cv2

    from wbc.attributes.head import head_path_for
    from wbc.canonical import prepare
    from wbc.inference import WBCAnalyzer

    data, weights, result = trained
    head_file = head_path_for(weights)
    head_file.write_bytes((result["save_dir"] / "head.pt").read_bytes())
    analyzer = WBCAnalyzer(weights, conf=0.01)
    assert analyzer.head is not None and analyzer.imgsz == 96
    calls = []
    analyzer.detector.model[0].register_forward_hook(lambda *a: calls.append(1))
    canonical = prepare(data)
    images = [cv2.imread(str(p)) for p in sorted((canonical.root / "images" / "val").iterdir())[:4]]
    cells = analyzer(images)
    assert len(calls) == 1 and len(cells) == 4
    values = {a["name"]: a["values"] for a in analyzer.attribute_specs}
    for cell in (c for row in cells for c in row):
        assert set(cell.attributes) == set(values)
        assert all(v in values[n] and 0 <= p <= 1 for n, (v, p) in cell.attributes.items())
        x1, y1, x2, y2 = cell.box
        assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
    assert WBCAnalyzer(weights, head=False).head is None


def test_model_card_reports_detection_fields_and_attributes(trained, tmp_path):
    from wbc.model_card import main

    data, weights, result = trained
    main(["--run", str(weights.parent.parent), "--data", data, "--out", str(tmp_path / "model"), "--command", "python train.py ...",
          "--head", str(result["save_dir"] / "head.pt"), "--head-command", "frozen detector, 12 epochs"])
    card = (tmp_path / "model.md").read_text()
    for text in ("| class | P | R | mAP50 | mAP50-95 |", "## WBC type per field (val, 30 fields)", "## Attributes from predicted boxes",
                 "| **mean** |", "python train.py ..."):
        assert text in card, text
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "model.attributes.pt").is_file()
    import json

    assert json.loads((tmp_path / "model.json").read_text())["train_field_size"] > 0  # predict.py's default tile
    # the shipped files alone are enough to write the card again (the run folder does not travel with them)
    main(["--weights", str(tmp_path / "model.pt"), "--data", data, "--out", str(tmp_path / "model"), "--command", "python train.py ...",
          "--head", str(tmp_path / "model.attributes.pt"), "--head-command", "frozen detector, 12 epochs"])
    assert (tmp_path / "model.md").read_text() == card
    # a hand-written section (e.g. leave-one-source-out) goes before Limits, so the card regenerates whole
    (tmp_path / "loso.md").write_text("| left out | AP50 |\n|---|---|\n| BCCD | 0.9 |\n")
    main(["--weights", str(tmp_path / "model.pt"), "--data", data, "--out", str(tmp_path / "model"), "--command", "python train.py ...",
          "--section", "Leave-one-source-out", str(tmp_path / "loso.md")])
    again = (tmp_path / "model.md").read_text()
    assert again.index("## Leave-one-source-out\n\n| left out | AP50 |") < again.index("## Limits")


def test_card_of_a_fine_tuning_run_names_the_architecture_not_the_initial_weights(trained, tmp_path):
    from wbc.model_card import checkpoint_summary, run_summary

    _, weights, _ = trained
    run = tmp_path / "phase2"
    (run / "weights").mkdir(parents=True)
    shutil.copy(weights, run / "weights" / "best.pt")
    (run / "args.yaml").write_text("model: weights/wbc_pbc_yolov5n_352.pt\nimgsz: 64\n")
    (run / "results.csv").write_text("epoch,time\n1,12.5\n")
    summary = run_summary(run)
    assert summary["architecture"] == checkpoint_summary(weights)["architecture"]
    assert summary["architecture"] not in (None, "", "wbc_pbc_yolov5n_352")


def test_cached_features_are_the_frozen_detectors_own(trained):
    from wbc.attributes.data import AttributeFields, to_tensor
    from wbc.attributes.features import FieldFeatures
    from wbc.attributes.train import frozen_detector
    from wbc.canonical import prepare

    data, weights, _ = trained
    detector, tap, imgsz, channels = frozen_detector(str(weights), [2, 4, 6], None, "cpu")
    fields = AttributeFields(prepare(data), "val", imgsz)
    cache = FieldFeatures(detector, tap, fields, batch=7, device="cpu")
    assert len(cache) == len(fields) and [m.shape[0] for m in cache[0][0]] == channels
    for i in (0, len(fields) - 1):
        image, boxes, codes = fields[i]
        with torch.no_grad():
            detector(to_tensor([image]))
        for cached, direct in zip(cache[i][0], tap.features):
            assert torch.allclose(cached.float(), direct[0], atol=1e-2, rtol=1e-2)  # float16 storage
        assert np.array_equal(cache[i][1], boxes) and np.array_equal(cache[i][2], codes)
    subset = cache.select([6, 2])
    assert [m.shape[0] for m in subset[0][0]] == [channels[2], channels[0]]


def test_augmented_training_runs_the_detector_on_turned_fields(trained, tmp_path, monkeypatch):
    from wbc.attributes.data import AttributeFields
    from wbc.attributes.train import DetectorBatches, train_head

    data, detector, _ = trained
    config = tmp_path / "head.yaml"
    config.write_text("layers: [2, 4]\n")
    seen = []
    original = DetectorBatches.__init__

    def spy(self, detector, tap, loader, device):
        seen.append(loader.dataset.datasets[0])
        original(self, detector, tap, loader, device)

    monkeypatch.setattr(DetectorBatches, "__init__", spy)
    result = train_head(str(detector), data, epochs=2, batch=8, imgsz=96, name="aug", config=str(config), project=tmp_path,
                        workers=0, augment=True)
    assert [f.view for f in seen] == [None]  # train: a random view per item; val stays cached
    assert isinstance(seen[0], AttributeFields) and len(result["history"]) == 2
    assert 0 < result["best_mean_accuracy"] <= 1 and (result["save_dir"] / "head.pt").is_file()


def test_type_fields_code_each_box_by_its_class_and_mask_the_rest(synthetic):
    """A type head's targets: the class among the given types. Red cells, platelets and classes
    outside the list carry no code and are left out, as is a field with no typed box."""
    from wbc.attributes.data import CELL_TYPE, AttributeFields
    from wbc.canonical import prepare

    canonical = prepare(synthetic("coco"))
    table = canonical.attributes()
    typed = table[(table["split"] == "train") & table["class"].isin(["MO", "LY"])]
    fields = AttributeFields(canonical, "train", 128, types=["MO", "LY"])
    assert fields.attributes == [CELL_TYPE]
    assert [name for name, _, _ in fields.items] == sorted(set(typed["image"]))
    for name, boxes, codes in fields.items:
        rows = typed[typed["image"] == name]
        assert codes.shape == (len(rows), 1) and len(boxes) == len(rows)
        assert list(codes[:, 0]) == [["MO", "LY"].index(c) for c in rows["class"]]


def test_a_type_head_trains_and_the_analyzer_reports_each_cells_type(trained, tmp_path):
    from wbc.attributes.data import CELL_TYPE
    from wbc.attributes.head import AttributeHead
    from wbc.attributes.train import train_head
    from wbc.canonical import prepare
    from wbc.errors import UsageError
    from wbc.inference import WBCAnalyzer

    data, detector, _ = trained
    config = tmp_path / "head.yaml"
    config.write_text("layers: [2, 4]\n")
    result = train_head(str(detector), data, epochs=12, batch=8, imgsz=96, name="types", config=str(config), project=tmp_path,
                        workers=0, lr=3e-3, jitter=0.03, types=True)
    head = AttributeHead.load(result["save_dir"] / "head.pt")
    wbc = prepare(data).spec.wbc_classes
    assert head.config.attributes == [{"name": CELL_TYPE, "values": wbc}] and head.config.classes == wbc
    assert result["best_mean_accuracy"] > 1 / len(wbc)  # better than chance on cells whose class changes what is drawn
    analyzer = WBCAnalyzer(str(detector), result["save_dir"] / "head.pt", 96, conf=0.001, rescale=False)  # a 2-epoch detector: low scores
    canonical = prepare(data)
    images = [cv2.imread(str(p)) for p in sorted((canonical.root / "images" / "val").iterdir())[:4]]
    typed = [c for cells in analyzer(images) for c in cells if c.class_name in wbc]
    assert typed and all(c.attributes[CELL_TYPE][0] in wbc for c in typed)

    # the same head beside the detector as its type head: share 0 types as the detector does, share 1 as the head does
    alone = WBCAnalyzer(str(detector), False, 96, conf=0.001, rescale=False)(images)
    by_head = analyzer(images)
    for share, expected in ((0.0, [[c.class_name for c in row] for row in alone]),
                            (1.0, [[c.attributes[CELL_TYPE][0] if c.class_name in wbc else c.class_name for c in row] for row in by_head])):
        fused = WBCAnalyzer(str(detector), False, 96, conf=0.001, rescale=False, types=result["save_dir"] / "head.pt", type_share=share)
        rows = fused(images)
        assert [[c.box for c in row] for row in rows] == [[c.box for c in row] for row in alone]  # boxes and order: one detector pass
        assert [[c.class_name for c in row] for row in rows] == expected
    with pytest.raises(UsageError, match="share"):  # no card records one
        WBCAnalyzer(str(detector), False, 96, rescale=False, types=result["save_dir"] / "head.pt")
    with pytest.raises(UsageError, match="not a type head"):
        WBCAnalyzer(str(detector), False, 96, rescale=False, types=trained[2]["save_dir"] / "head.pt", type_share=0.5)


def test_stain_copies_are_fixed_draws_that_differ_from_copy_to_copy(synthetic):
    """``copies`` fixed stainings of every field: item i is the same image every time it is read
    (a feature cache holds it), the copies of one field differ, and the boxes and codes do not change."""
    from wbc.attributes.data import AttributeFields
    from wbc.canonical import prepare

    canonical = prepare(synthetic("coco"))
    plain = AttributeFields(canonical, "train", 128)
    stained = AttributeFields(canonical, "train", 128, stain=1.0, copies=3, seed=1)
    n = len(plain)
    assert len(stained) == 3 * n
    changed = 0
    for i in range(n):
        image, boxes, codes = plain[i]
        copies = [stained[i + k * n] for k in range(3)]
        for copy, again in zip(copies, (stained[i + k * n] for k in range(3))):
            assert np.array_equal(copy[0], again[0])
            assert np.array_equal(copy[1], boxes) and np.array_equal(copy[2], codes)
        changed += sum(not np.array_equal(a[0], b[0]) for a, b in zip(copies, copies[1:]))
    assert changed >= n  # with 10 transforms at strength 1, nearly every pair of draws differs
    with pytest.raises(ValueError, match="copies"):
        AttributeFields(canonical, "train", 128, copies=0)


def test_fields_reach_the_head_in_the_reference_colours(synthetic):
    """With a colour reference every field is moved to it before the letterbox, as the analyzer moves
    a field before the detector: the item is the normalised field letterboxed; boxes and codes as without."""
    from wbc.attributes.data import AttributeFields, letterbox
    from wbc.canonical import prepare
    from wbc.colour import ColourReference, lab_statistics, normalize

    canonical = prepare(synthetic("coco"))
    reference = ColourReference((150.0, 140.0, 120.0), (30.0, 6.0, 9.0), 1, "test")
    plain, moved = AttributeFields(canonical, "train", 128), AttributeFields(canonical, "train", 128, colour=reference)
    name = plain.items[0][0]
    field = cv2.imread(str(canonical.root / "images" / "train" / name))
    (image, boxes, codes), (normalised, same_boxes, same_codes) = plain[0], moved[0]
    assert np.array_equal(normalised, letterbox(normalize(field, reference), 128)[0])
    assert not np.array_equal(image, normalised)
    assert np.array_equal(boxes, same_boxes) and np.array_equal(codes, same_codes)
    mean, _ = lab_statistics(normalize(field, reference))
    assert np.allclose(mean, reference.mean, atol=2)


def test_a_label_set_target_teaches_one_of_its_values():
    """A box labelled "one of {1, 2}" (code n + set index) adds -log(p1 + p2), weight 1 beside the
    single-valued boxes; with no set code in the batch the loss is the plain cross-entropy."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4, requires_grad=True)
    sets = [torch.tensor([[0.0, 1.0, 1.0, 0.0]])]
    targets = torch.tensor([[0], [4], [-1]])
    loss = attribute_loss([logits], targets, sets=sets)
    p = logits.softmax(1)
    assert torch.allclose(loss, -(p[0, 0].log() + (p[1, 1] + p[1, 2]).log()) / 2)
    loss.backward()
    assert logits.grad[2].abs().sum() == 0
    set_only = torch.tensor([[0.0, 5.0, 5.0, 0.0]], requires_grad=True)  # its mass already on the set: nearly no loss
    assert float(attribute_loss([set_only], torch.tensor([[4]]), sets=sets).detach()) < 0.02
    plain = torch.tensor([[1], [3]])
    assert torch.allclose(attribute_loss([logits[:2]], plain, sets=sets), torch.nn.functional.cross_entropy(logits[:2], plain[:, 0]))
    weights = [torch.tensor([0.5, 1.0, 2.0, 4.0])]
    assert torch.allclose(attribute_loss([logits[:2]], plain, weights),
                          torch.nn.functional.cross_entropy(logits[:2], plain[:, 0], weight=weights[0]))
    with pytest.raises(ValueError, match="label sets"):
        attribute_loss([logits], targets)


def test_a_window_keeps_the_box_on_the_cell_at_the_training_scale():
    from wbc.attributes.data import window

    image = np.zeros((480, 640, 3), np.uint8)
    image[200:260, 500:580] = 255  # the cell
    box = np.array([[500, 200, 580, 260]], np.float32)
    out, moved = window(image, box, 0.5, 128)
    assert out.shape == (128, 128, 3)
    x1, y1, x2, y2 = moved[0].round().astype(int)
    assert (x2 - x1, y2 - y1) == (40, 30) and (out[y1 + 2:y2 - 2, x1 + 2:x2 - 2] == 255).all()
    assert out[:, :x1 - 2].max() == 0  # the rest of the field around it, not padding
    small, at = window(image[:100, :100], np.array([[10, 10, 30, 30]], np.float32), 1.0, 128)
    assert (small[100:] == 114).all() and np.allclose(at, [[10, 10, 30, 30]])  # a smaller field is padded
