"""wbc: white-blood-cell detection, typing and morphology on peripheral blood smears."""

import os

# Nothing is ever downloaded or pip-installed at run time: ultralytics otherwise reaches for the
# network (assets, fonts) and auto-installs packages (pi-heif on the first unreadable image).
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

__version__ = "0.1.0"
