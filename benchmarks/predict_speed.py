"""Inference speed, in one run on the same images: (a) plain ultralytics predict of the detector
weights, (b) our pipeline (WBCAnalyzer: detector + attribute head, one detector pass), (c) the same
pipeline on onnxruntime, (d) (b) without resizing fields to the training scale (the red-cell
estimate's and the colour normalisation's shares of (b)'s time are measured as well). Each path runs in its own process (so that peak memory is its own), on
images decoded beforehand, after one untimed warm-up batch, with the thread count plain ultralytics
sets for itself on a CPU (``NUM_THREADS``: cores - 1, at most 8) for all three; the paths are run in turn ``--repeats``
times and each path's fastest run is reported (run-to-run spread on a shared 2-core machine is
large: the same path has taken 6.2 s and 10.4 s).

    .venv/bin/python benchmarks/predict_speed.py --pbc 200 --bccd 50

Writes runs/benchmark/predict_speed/<name>/results.json and prints images/s, the ratios and peak RSS.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2

from wbc.paths import DEFAULT_WEIGHTS, REPO_ROOT, new_run_dir

PATHS = {"a": "plain ultralytics predict", "b": "WBCAnalyzer (detector + attribute head)", "c": "WBCAnalyzer on onnxruntime",
         "d": "WBCAnalyzer without resizing to the training scale"}


def worker(path: str, images_file: Path, weights: str, onnx: str, imgsz: int, batch: int) -> dict:
    scale_seconds, colour_seconds = [0.0], [0.0]
    files = [Path(line) for line in images_file.read_text().splitlines()]
    images = [cv2.imread(str(f)) for f in files]
    if path == "a":
        from ultralytics import YOLO

        model = YOLO(weights)

        def run(chunk):
            return sum(len(r.boxes) for r in model.predict(chunk, imgsz=imgsz, conf=0.25, batch=len(chunk), verbose=False))
    else:
        import torch
        from ultralytics.utils import NUM_THREADS

        if path in "bd":
            from wbc.inference import WBCAnalyzer

            torch.set_num_threads(NUM_THREADS)  # the thread count plain ultralytics predict sets for itself on a CPU
            analyzer = WBCAnalyzer(weights, imgsz=imgsz, rescale=path == "b")
            scales = analyzer.field_scales

            def timed_scales(images):  # the red-cell estimate's own share of the time
                t = time.perf_counter()
                found = scales(images)
                scale_seconds[0] += time.perf_counter() - t
                return found

            analyzer.field_scales = timed_scales
            import wbc.inference

            normalize = wbc.inference.normalize

            def timed_normalize(image, reference):  # the colour normalisation's own share
                t = time.perf_counter()
                out = normalize(image, reference)
                colour_seconds[0] += time.perf_counter() - t
                return out

            wbc.inference.normalize = timed_normalize
        else:
            from wbc.export import OnnxAnalyzer

            analyzer = OnnxAnalyzer(onnx, threads=NUM_THREADS)

        def run(chunk):
            return sum(map(len, analyzer(chunk)))

    run(images[:batch])  # warm-up, not timed
    scale_seconds[0] = colour_seconds[0] = 0.0
    start, cells = time.perf_counter(), 0
    for i in range(0, len(images), batch):
        cells += run(images[i:i + batch])
    seconds = time.perf_counter() - start
    import torch

    return {"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds, "cells": cells, "torch_threads": torch.get_num_threads(),
            "scale_estimate_seconds": scale_seconds[0], "colour_seconds": colour_seconds[0],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--pbc", type=int, default=200, help="PBC val fields")
    p.add_argument("--bccd", type=int, default=50, help="BCCD val fields")
    p.add_argument("--imgsz", type=int, help="default: the size the model (its attribute head, else the detector) was trained at")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3, help="runs of each path (interleaved); the fastest is reported")
    p.add_argument("--name", default="exp")
    p.add_argument("--worker", choices=list(PATHS), help=argparse.SUPPRESS)
    p.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--onnx", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.images, args.weights, args.onnx, args.imgsz, args.batch)))
        return

    from wbc.canonical import prepare
    from wbc.export import export_onnx
    from wbc.inference import WBCAnalyzer

    args.imgsz = args.imgsz or WBCAnalyzer(args.weights).imgsz

    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmark" / "predict_speed")
    out.mkdir(parents=True)
    files = []
    for data, n in (("data/pbc_wbcatt.yaml", args.pbc), ("data/bccd.yaml", args.bccd)):
        if n:
            root = prepare(data).root / "images" / "val"
            files += sorted(root.iterdir())[:n]
    (out / "images.txt").write_text("\n".join(str(f) for f in files))
    onnx = export_onnx(args.weights, out / "model", args.imgsz)["detector"]
    runs = {path: [] for path in PATHS}
    for repeat in range(args.repeats):  # interleaved a b c a b c ...: slow drifts of the machine hit every path alike
        for path in PATHS:
            cmd = [sys.executable, __file__, "--worker", path, "--images", str(out / "images.txt"), "--weights", args.weights,
                   "--onnx", onnx, "--imgsz", str(args.imgsz), "--batch", str(args.batch)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[path].append(json.loads(done.stdout.strip().splitlines()[-1]))
    results = {}
    for path, label in PATHS.items():
        r = results[path] = {"path": label, **min(runs[path], key=lambda x: x["seconds"]), "all_seconds": [x["seconds"] for x in runs[path]]}
        print(f"({path}) {label}: {r['images_per_s']:.1f} images/s (best of {args.repeats}: {r['seconds']:.1f} s for {r['images']} images; "
              f"all {', '.join(f'{t:.1f}' for t in r['all_seconds'])} s), peak RSS {r['peak_rss_mb']:.0f} MB")
    ratios = {"b_over_a_time": results["a"]["images_per_s"] / results["b"]["images_per_s"],
              "c_over_a_time": results["a"]["images_per_s"] / results["c"]["images_per_s"],
              "b_over_d_time": results["d"]["images_per_s"] / results["b"]["images_per_s"],
              "scale_estimate_share_of_b": results["b"]["scale_estimate_seconds"] / results["b"]["seconds"],
              "colour_share_of_b": results["b"]["colour_seconds"] / results["b"]["seconds"]}
    print(f"time ratio (b)/(a) = {ratios['b_over_a_time']:.3f} (target <= 1.15); (c)/(a) = {ratios['c_over_a_time']:.3f} (target < 1); "
          f"(b)/(d) = {ratios['b_over_d_time']:.3f}; the red-cell estimate is {ratios['scale_estimate_share_of_b'] * 100:.1f}% of (b)'s time, "
          f"the colour normalisation {ratios['colour_share_of_b'] * 100:.1f}%")
    (out / "results.json").write_text(json.dumps({"results": results, "ratios": ratios, "imgsz": args.imgsz, "batch": args.batch,
                                                  "weights": args.weights, "machine": f"{platform.machine()}, {platform.processor()}",
                                                  "images": {"pbc_val": args.pbc, "bccd_val": args.bccd}}, indent=2))
    print(f"written to {out / 'results.json'}")


if __name__ == "__main__":
    main()
