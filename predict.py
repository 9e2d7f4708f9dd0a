"""Whole-smear inference: cells, differential count per 100 WBC, annotated images and a report.html gallery.

    python predict.py --source ../shared/data/leukemiaattri_samples --name samples

See wbc/predict.py for what is written to runs/predict/<name>/.
"""

from wbc.cli import run
from wbc.predict import main

if __name__ == "__main__":
    run(main)
