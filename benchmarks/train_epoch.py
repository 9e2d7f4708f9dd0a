"""Time one training epoch of train.py's trainer against plain ultralytics, same model, data and machine;
and, for datasets with attributes, a phase-2 epoch with and without the jointly trained attribute head.

    .venv/bin/python benchmarks/train_epoch.py --data data/pbc_wbcatt.yaml --imgsz 256 --fraction 0.1

Every run builds yolov5n from its config (the weights do not change the cost of an epoch), trains
one epoch without validation or plots, and is timed from the first batch to the end of the epoch. Writes runs/benchmark/train_epoch/<name>/result.json.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ultralytics import YOLO

from wbc.attributes.head import HeadConfig
from wbc.canonical import prepare
from wbc.paths import REPO_ROOT, new_run_dir
from wbc.training import train
from wbc.weights import model_config


class EpochTimer:
    def __init__(self):
        self.start = self.end = None

    def on_train_epoch_start(self, trainer):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer):
        self.end = time.perf_counter()

    @property
    def seconds(self):
        return self.end - self.start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/pbc_wbcatt.yaml")
    p.add_argument("--model", default="yolov5n")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--fraction", type=float, default=0.1, help="share of the train split per epoch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="exp")
    args = p.parse_args()

    canonical = prepare(args.data)
    common = dict(epochs=1, imgsz=args.imgsz, batch=args.batch, device=args.device, workers=2, val=False, plots=False,
                  fraction=args.fraction, optimizer="SGD", warmup_epochs=0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))

    plain = EpochTimer()
    model = YOLO(model_config(args.model))
    model.add_callback("on_train_epoch_start", plain.on_train_epoch_start)
    model.add_callback("on_train_epoch_end", plain.on_train_epoch_end)
    model.train(data=str(canonical.data_yaml), project=str(tmp), name="plain", **common)

    extra = {k: v for k, v in common.items() if k not in ("epochs", "imgsz", "batch", "device", "workers")}

    def ours(name: str, hyp: str, joint_head=None) -> float:
        timer = EpochTimer()
        train(args.data, args.model, [1], [1], [hyp], name, imgsz=args.imgsz, batch=args.batch, device=args.device, project=tmp,
              extra=extra, joint_head=joint_head,
              callbacks={"on_train_epoch_start": timer.on_train_epoch_start, "on_train_epoch_end": timer.on_train_epoch_end})
        return timer.seconds

    seconds = {"plain ultralytics": plain.seconds, "train.py (scratch-low)": ours("ours", "scratch-low")}
    if canonical.spec.used_attributes:  # phase-2 augmentation, without and with the jointly trained attribute head
        seconds["train.py phase-2 hyp (scratch-high)"] = ours("phase2", "scratch-high")
        seconds["train.py phase-2 hyp + joint attribute head"] = ours("joint", "scratch-high", HeadConfig.from_yaml())

    result = {"data": args.data, "model": args.model, "imgsz": args.imgsz, "batch": args.batch, "fraction": args.fraction,
              "device": args.device, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
              "epoch_s": seconds, "ratio_train_py_to_plain": seconds["train.py (scratch-low)"] / plain.seconds}
    if "train.py phase-2 hyp + joint attribute head" in seconds:
        result["ratio_joint_head_to_no_head"] = seconds["train.py phase-2 hyp + joint attribute head"] / seconds["train.py phase-2 hyp (scratch-high)"]
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmark" / "train_epoch")
    out.mkdir(parents=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print()
    for name, s in seconds.items():
        print(f"{name:<45} {s:8.1f} s per epoch")
    print(f"ratio train.py / plain ultralytics: {result['ratio_train_py_to_plain']:.3f}")
    if "ratio_joint_head_to_no_head" in result:
        print(f"ratio with / without the joint attribute head: {result['ratio_joint_head_to_no_head']:.3f}")
    print(f"written to {out / 'result.json'}")


if __name__ == "__main__":
    main()
