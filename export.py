"""Export the detector, its attribute head and its type head to ONNX (run them with wbc.export.OnnxAnalyzer).

    python export.py --weights weights/wbc_multisource_yolov5n_352.pt
"""

from wbc.cli import run
from wbc.export import main

if __name__ == "__main__":
    run(main)
