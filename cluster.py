"""Group cell crops without labels: embeddings, k-means, deep embedded clustering (see wbc/cluster/run.py).

    python cluster.py --crops runs/crops/pbc_val_11 --encoder detector --k 8 --groups NE=BNE,SNE IG=MMY,MY,PMY --name pbc
"""

from wbc.cli import run
from wbc.cluster.run import main

if __name__ == "__main__":
    run(main)
