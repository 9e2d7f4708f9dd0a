"""Check a dataset yaml: counts per split and every skipped or repaired item.

    python check.py --data data/pbc_wbcatt.yaml [--verbose]
"""

import sys

from wbc.check import main

if __name__ == "__main__":
    sys.exit(main())
