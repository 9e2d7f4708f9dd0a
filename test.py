"""Evaluate detection and attributes on a split and write the per-cell CSV of ground truth vs prediction.

    python test.py --weights weights/wbc_multisource_yolov5n_352.pt --data data/pbc_wbcatt.yaml --split val --name pbc_val

See wbc/evaluation/evaluate.py for what is written to runs/test/<name>/.
"""

from wbc.cli import run
from wbc.evaluation.evaluate import main

if __name__ == "__main__":
    run(main)
