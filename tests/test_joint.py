"""Joint detector + attribute-head training: attribute rows travel with their boxes through
ultralytics' augmentation, checkpoints stay plain detectors with the head beside them, resume works."""

import numpy as np
import pytest
import torch
from ultralytics.cfg import get_cfg
from ultralytics.nn.tasks import torch_safe_load
from ultralytics.utils import DEFAULT_CFG

from wbc.attributes.head import AttributeHead, HeadConfig
from wbc.attributes.joint import AttributeYOLODataset, split_attribute_rows
from wbc.canonical import prepare
from wbc.training import train

TINY = dict(imgsz=64, batch=4, device="cpu", workers=0)
FAST = {"plots": False, "warmup_epochs": 0}
HEAD = HeadConfig(layers=[2, 4], hidden=16)


def dataset(canonical, augment: bool, **hyp):
    import yaml

    data = yaml.safe_load(canonical.data_yaml.read_text())
    table = canonical.attributes()
    names = [a.name for a in canonical.spec.used_attributes]
    cfg = get_cfg(DEFAULT_CFG, {"imgsz": 64, **hyp})
    return AttributeYOLODataset(img_path=str(canonical.root / "images" / "train"), imgsz=64, augment=augment, hyp=cfg, data=data,
                                attribute_table=table[table["split"] == "train"], attribute_names=names), table, names


def test_each_box_gets_the_attribute_row_of_its_own_image_and_position(synthetic):
    canonical = prepare(synthetic("coco"))
    ds, table, names = dataset(canonical, augment=False)
    train_rows = table[table["split"] == "train"]
    checked = 0
    for i, label in enumerate(ds.labels):
        mine = train_rows[train_rows["image"] == label["im_file"].split("/")[-1]].sort_values("box")
        assert len(mine) == len(label["cls"])  # no duplicates in generated data: ultralytics keeps the file's order
        for j, row in enumerate(ds.rows[i]):
            expected = mine.iloc[j][names].to_numpy(np.int64)
            if (expected >= 0).any():
                assert np.array_equal(ds.codes[row], expected)
                checked += 1
            else:
                assert row == -1
    assert checked == int((train_rows[names] >= 0).any(axis=1).sum())


def test_attribute_rows_survive_mosaic_affine_mixup_and_flips(synthetic):
    canonical = prepare(synthetic("coco"))
    ds, table, names = dataset(canonical, augment=True, mosaic=1.0, mixup=0.5, degrees=10, scale=0.5, fliplr=0.5, flipud=0.5)
    train_rows = table[table["split"] == "train"]
    known = train_rows[(train_rows[names] >= 0).any(axis=1)].reset_index(drop=True)
    nc, carried = len(ds.data["names"]), 0
    for i in range(len(ds)):
        item = ds[i]
        classes, codes = split_attribute_rows(item["cls"], torch.from_numpy(ds.codes), nc)
        rows = item["cls"].round().long().view(-1) // nc - 1
        assert ((classes >= 0) & (classes < nc)).all()
        for c, r, code in zip(classes.view(-1).tolist(), rows.tolist(), codes):
            if r >= 0:  # the row's class is the box's class, and the codes are that row's
                assert known.loc[r, "class"] == ds.data["names"][int(c)] and np.array_equal(code.numpy(), ds.codes[r])
                carried += 1
            else:
                assert (code < 0).all()
    assert carried > len(ds)  # mosaic puts several attribute-carrying cells in each item


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory):
    from wbc.synth import generate

    root = tmp_path_factory.mktemp("joint")
    data = str(generate(root / "raw", "coco", n_train=24, n_val=8, imgsz=64))
    return data, root


class Interrupted(Exception):
    pass


def test_joint_phase_saves_a_plain_detector_with_the_head_beside_it_and_resumes(joint_run):
    from wbc.inference import WBCAnalyzer

    data, root = joint_run

    def stop_in_second_epoch(trainer):
        if trainer.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(data, "yolov5n", [2], [2], ["scratch-high"], "joint", project=root, extra=FAST, joint_head=HEAD,
              callbacks={"on_train_batch_end": stop_in_second_epoch}, **TINY)
    weights = root / "joint" / "phase2" / "weights"
    assert torch_safe_load(weights / "last.pt", safe_only=True)[0]["epoch"] == 0
    saved_head = AttributeHead.load(weights / "last.attributes.pt").state_dict()

    started = []
    results = train(data, None, [2], [2], [None], "joint", project=root, resume=True, joint_head=HEAD,
                    callbacks={"on_train_epoch_start": lambda t: started.append((t.epoch, {k: v.clone() for k, v in t.ema.ema.attribute_head.state_dict().items()}))},
                    **TINY)
    assert [e for e, _ in started] == [1]
    assert all(torch.allclose(started[0][1][k].float(), saved_head[k].float(), atol=1e-3) for k in saved_head)  # the head resumed too
    ckpt = torch_safe_load(results[0].best, safe_only=True)[0]  # ultralytics' own weights_only allow-list: no project classes
    assert not hasattr(ckpt["ema"] or ckpt["model"], "attribute_head")
    head = AttributeHead.load(results[0].best.with_name("best.attributes.pt"))
    assert [a["name"] for a in head.config.attributes] == [a.name for a in prepare(data).spec.used_attributes]
    header = (results[0].save_dir / "results.csv").read_text().splitlines()[0]
    assert "train/attr" in header
    analyzer = WBCAnalyzer(results[0].best, conf=0.0)
    assert analyzer.head is not None and analyzer.imgsz == 64


def test_joint_training_starts_from_a_saved_head_and_refuses_a_mismatched_one(joint_run, tmp_path):
    from dataclasses import replace

    from ultralytics.nn.tasks import DetectionModel

    from wbc.attributes.head import layer_channels
    from wbc.attributes.joint import warm_head
    from wbc.weights import model_config

    data, root = joint_run
    names = [{"name": a.name, "values": list(a.values)} for a in prepare(data).spec.used_attributes]
    detector = DetectionModel(model_config("yolov5n"), nc=3, verbose=False)
    saved = AttributeHead(replace(HEAD, attributes=names, in_channels=layer_channels(detector, HEAD.layers, 64), imgsz=64))
    saved.save(tmp_path / "frozen.attributes.pt")

    started = {}

    def keep_head_and_stop(trainer):
        started.update({k: v.clone() for k, v in trainer.model.attribute_head.state_dict().items()})
        raise Interrupted

    with pytest.raises(Interrupted):
        train(data, "yolov5n", [2], [1], ["scratch-high"], "warm", project=root, extra=FAST, joint_head=tmp_path / "frozen.attributes.pt",
              callbacks={"on_train_epoch_start": keep_head_and_stop}, **TINY)
    assert started.keys() == saved.state_dict().keys()
    assert all(torch.equal(started[k], v) for k, v in saved.state_dict().items())

    other = [{**names[0], "values": [*names[0]["values"], "extra"]}, *names[1:]]
    with pytest.raises(ValueError, match="names and values must match"):
        warm_head(tmp_path / "frozen.attributes.pt", detector, other, 64, None)
    wider = DetectionModel(model_config("yolov5s"), nc=3, verbose=False)
    with pytest.raises(ValueError, match="this detector's have"):
        warm_head(tmp_path / "frozen.attributes.pt", wider, names, 64, None)


def test_nan_recovery_reloads_the_head_with_the_detector(joint_run):
    """ultralytics reloads last.pt when the loss turns NaN; the head, which last.pt does not hold, comes back from beside it."""
    data, root = joint_run
    seen = {}

    def poison_once(trainer):
        if trainer.epoch == 1 and not seen:
            seen["saved"] = AttributeHead.load(trainer.last.with_name("last.attributes.pt")).state_dict()
            trainer.loss = torch.tensor(float("nan"))

    def after_recovery(trainer):
        if trainer.nan_recovery_attempts and "restored" not in seen:
            seen["restored"] = {k: v.clone() for k, v in trainer.model.attribute_head.state_dict().items()}
            seen["ema"] = hasattr(trainer.ema.ema, "attribute_head")

    results = train(data, "yolov5n", [2], [3], ["scratch-high"], "nan", project=root, extra=FAST, joint_head=HEAD,
                    callbacks={"on_train_epoch_end": poison_once, "on_train_epoch_start": after_recovery}, **TINY)
    assert results[0].best.with_name("best.attributes.pt").is_file()
    assert seen["ema"] and seen["restored"].keys() == seen["saved"].keys()
    assert all(torch.allclose(seen["restored"][k].float(), v.float(), atol=1e-3) for k, v in seen["saved"].items())
