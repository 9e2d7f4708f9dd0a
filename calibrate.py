"""Fit the review decision of a detector: calibrated type / attribute probabilities, the OOD score and
the operating point that sends cells to "unidentified" (see wbc/review/fit.py).

    python calibrate.py                       # the shipped model on data/wbc_multisource.yaml
    python calibrate.py --weights runs/train/exp/weights/best.pt --data data/pbc_wbcatt.yaml
"""

from wbc.cli import run
from wbc.review.fit import main

if __name__ == "__main__":
    run(main)
