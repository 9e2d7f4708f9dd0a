"""Check a dataset yaml: counts per split and every skipped or repaired item.

    python check.py --data data/pbc_wbcatt.yaml [--verbose]
"""

from wbc.check import main
from wbc.cli import run

if __name__ == "__main__":
    run(main)
