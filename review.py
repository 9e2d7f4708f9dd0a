"""Review and correct a predict run in the browser (see wbc/app/cli.py).

    python review.py runs/predict/samples
"""

from wbc.cli import run
from wbc.app.cli import main

if __name__ == "__main__":
    run(main)
