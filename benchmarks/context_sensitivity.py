"""How often the model's WBC class changes when the same field is analysed inside a larger read:
glass around it, at a random offset, as a whole-slide sweep reads a field with its neighbours.

    .venv/bin/python benchmarks/context_sensitivity.py --fields 200

The model's own sensitivity to a cell's surroundings, next to which benchmarks/slide_reading.py's
agreement between a field alone and the same field in a slide is read. PBC val fields, at the
training scale (factor 1), a fixed random sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from wbc.inference import WBCAnalyzer, model_card  # noqa: E402
from wbc.paths import DEFAULT_WEIGHTS, data_root  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fields", type=int, default=200)
    p.add_argument("--read", type=int, default=563, help="side of the read around a field (363 + 2 x 100 px margin, as a slide field)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    args = p.parse_args(argv)
    analyzer = WBCAnalyzer(args.weights)
    wbc = set(model_card(args.weights).get("wbc_classes") or analyzer.names.values())
    files = sorted((data_root() / "pbc" / "images" / "val").glob("*.jpg"))
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.choice(len(files), min(args.fields, len(files)), replace=False))]
    same = n = 0
    for f in files:
        image = cv2.imread(str(f))
        pixels = image.reshape(-1, 3)
        glass = np.median(pixels[pixels.sum(1) >= np.percentile(pixels.sum(1), 90)], 0)
        canvas = np.empty((args.read, args.read, 3), np.uint8)
        canvas[:] = glass
        ox, oy = int(rng.integers(0, args.read - image.shape[1])), int(rng.integers(0, args.read - image.shape[0]))
        canvas[oy:oy + image.shape[0], ox:ox + image.shape[1]] = image
        alone, inside = analyzer([image, canvas], [1.0, 1.0])
        for c in alone:
            if c.class_name not in wbc:
                continue
            cx, cy = (c.box[0] + c.box[2]) / 2 + ox, (c.box[1] + c.box[3]) / 2 + oy
            near = [d for d in inside if d.class_name in wbc and abs((d.box[0] + d.box[2]) / 2 - cx) < 20
                    and abs((d.box[1] + d.box[3]) / 2 - cy) < 20]
            n += 1
            same += bool(near) and near[0].class_name == c.class_name
    print(json.dumps({"fields": len(files), "wbc": n, "same_class": same, "share": round(same / max(1, n), 4)}))


if __name__ == "__main__":
    main()
