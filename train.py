"""Train the WBC detector in two phases (AttriDet's recipe on ultralytics).

    python train.py --data data/pbc_wbcatt.yaml --weights ../shared/weights/yolov5n.pt --imgsz 256 --epochs 10 --phase 1
    python train.py --data data/WBC_v1.yaml --cfg yolov5x --weights yolov5x.pt --phase both --epochs 100 200 --batch 8 --imgsz 640
    python train.py --name exp --resume          # continue the interrupted phase of runs/train/exp
    python train.py --weights best.pt --phase 2 --attributes joint --attribute-init best.attributes.pt --hyp joint-finetune --optimizer AdamW
"""

import argparse
import shutil
from pathlib import Path

from wbc.arguments import IMGSZ, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT
from wbc.attributes.head import HeadConfig, head_path_for
from wbc.attributes.train import train_head
from wbc.cli import run
from wbc.errors import UsageError
from wbc.schema import load_spec
from wbc.training import train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Two-phase WBC detector training", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data/pbc_wbcatt.yaml", help="dataset yaml")
    p.add_argument("--data-root", help="dataset root overriding the yaml's path")
    p.add_argument("--weights", help="initial weights: ultralytics .pt, original YOLOv5 .pt, or a model config")
    p.add_argument("--cfg", help="model config (yolov5n..yolov5x or a yaml); weights are transferred into it")
    p.add_argument("--hyp", nargs="+", help="hyp yaml per phase (default: scratch-low for phase 1, scratch-high for phase 2)")
    p.add_argument("--epochs", nargs="+", type=POSITIVE_INT, default=[100, 200], help="epochs per phase (phase 1, phase 2)")
    p.add_argument("--phase", choices=["1", "2", "both"], default="1")
    p.add_argument("--batch", type=POSITIVE_INT, default=8)
    p.add_argument("--imgsz", type=IMGSZ, default=640)
    p.add_argument("--name", default="exp")
    p.add_argument("--device", default="cpu", help="cpu, 0, 0,1 ...")
    p.add_argument("--workers", type=NON_NEGATIVE_INT, default=2)
    p.add_argument("--resume", action="store_true", help="continue runs/train/<name> from the last.pt of its unfinished phase")
    p.add_argument("--exist-ok", action="store_true", help="reuse runs/train/<name> instead of making <name>2")
    p.add_argument("--cache", choices=["ram", "disk"], help="cache decoded images")
    p.add_argument("--time", type=POSITIVE, help="hours per phase; overrides --epochs")
    p.add_argument("--patience", type=POSITIVE_INT, default=100)
    p.add_argument("--optimizer", default="SGD", help="SGD (YOLOv5's), AdamW, or auto (ultralytics picks by run length)")
    p.add_argument("--attributes", choices=["frozen", "joint", "none"], default="frozen",
                   help="how the attribute head is trained when the dataset declares attributes: frozen = after the last "
                        "phase, on the frozen detector's cached features (--attribute-epochs); joint = together with the "
                        "detector in the last phase (loss weight: hyp key 'attribute'); none = no head. Either way it is "
                        "saved beside the detector as best.attributes.pt")
    p.add_argument("--attribute-epochs", type=NON_NEGATIVE_INT, default=20, help="epochs of frozen head training")
    p.add_argument("--attribute-config", help="attribute head config (default attribute_head/default.yaml)")
    p.add_argument("--attribute-init", type=Path,
                   help="with --attributes joint: start the head from this saved head (e.g. the frozen one beside --weights) "
                        "instead of from random weights; its layers and members replace --attribute-config")
    p.add_argument("--attribute-flip", action="store_true",
                   help="frozen head training also sees every training field mirrored (twice the feature cache and epoch time)")
    p.add_argument("--attribute-augment", action="store_true",
                   help="frozen head training turns every training field by a random rotation / reflection each epoch "
                        "(the detector then runs every epoch on train)")
    return p.parse_args(argv)


def per_phase(values, phases, flag):
    """One value per phase to run: N values for N phases, one for all, or the (phase 1, phase 2) pair's own."""
    if values is None:
        return [None] * len(phases)
    if len(values) == len(phases):
        return list(values)
    if len(values) == 1:
        return list(values) * len(phases)
    if len(values) == 2 and len(phases) == 1:
        return [values[phases[0] - 1]]
    raise UsageError(f"{flag}: give one value, or one per phase (phase 1, phase 2)")


def main(argv=None):
    args = parse_args(argv)
    phases = [1, 2] if args.phase == "both" else [int(args.phase)]
    extra = {k: v for k, v in {"cache": args.cache, "time": args.time, "patience": args.patience, "optimizer": args.optimizer}.items() if v is not None}
    if args.attribute_init is not None and (args.attributes != "joint" or args.attribute_config):
        raise UsageError("--attribute-init: only with --attributes joint, and instead of --attribute-config")
    if args.attribute_init is not None and not args.attribute_init.is_file():
        raise UsageError(f"--attribute-init: {args.attribute_init} not found")
    head = HeadConfig.from_yaml(args.attribute_config) if args.attributes != "none" else None
    if head is not None and not load_spec(args.data, args.data_root).used_attributes:
        print(f"{args.data} declares no attributes: no attribute head")
        head = None
    results = train(args.data, args.weights, phases, per_phase(args.epochs, phases, "--epochs"), per_phase(args.hyp, phases, "--hyp"),
                    args.name, args.imgsz, args.batch, args.device, args.resume, args.data_root, exist_ok=args.exist_ok,
                    workers=args.workers, cfg=args.cfg, extra=extra, joint_head=(args.attribute_init or head) if args.attributes == "joint" and head is not None else None)
    print(f"\n{'phase':<6} {'epochs':>6} {'mAP50':>7} {'mAP50-95':>9} {'wall':>8}  weights")
    for r in results:
        print(f"{r.phase:<6} {r.epochs:>6} {r.metrics.get('metrics/mAP50(B)', float('nan')):>7.3f} "
              f"{r.metrics.get('metrics/mAP50-95(B)', float('nan')):>9.3f} {r.wall_s / 60:>7.1f}m  {r.best}")
        if r.transferred:
            print(f"       transferred {r.transferred[0]}/{r.transferred[1]} tensors from the original YOLOv5 checkpoint")
    if head is not None and args.attributes == "joint" and results:
        print(f"attribute head trained jointly -> {head_path_for(results[-1].best)}")
    if head is not None and args.attributes == "frozen" and args.attribute_epochs and results:
        final = results[-1]
        trained = train_head(str(final.best), args.data, args.attribute_epochs, imgsz=args.imgsz, name="attributes",
                             config=args.attribute_config, device=args.device, workers=args.workers, project=final.save_dir.parent,
                             data_root=args.data_root, flip=args.attribute_flip, augment=args.attribute_augment)
        shutil.copy2(trained["save_dir"] / "head.pt", head_path_for(final.best))
        print(f"attribute head: val mean accuracy {trained['best_mean_accuracy']:.4f} on ground-truth boxes -> {head_path_for(final.best)}")


if __name__ == "__main__":
    run(main)
