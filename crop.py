"""Cut cells into a folder-per-class classification dataset, from a dataset's ground truth or a detector's predictions.

    python crop.py --data data/pbc_wbcatt.yaml --splits train val --size 128 --name pbc_wbc
    python crop.py --data data/pbc_wbcatt.yaml --rename LY=LY '*=other' --size 128 --name pbc_ly_vs_other
    python crop.py --source ../shared/data/leukemiaattri_samples --conf 0.5 --size 128 --name samples

See wbc/classify/crop_dataset.py for the layout of the output.
"""

from wbc.classify.crop_dataset import main
from wbc.cli import run

if __name__ == "__main__":
    run(main)
