"""Evaluation of a detector and its attribute head on a dataset split (``python test.py``)."""
