"""wbc: white-blood-cell detection, typing and morphology on peripheral blood smears."""

__version__ = "0.1.0"
