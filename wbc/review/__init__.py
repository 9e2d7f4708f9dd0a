"""Never guess: calibrated type probabilities, an out-of-distribution score per cell, and the
review decision that sends a WBC-type cell to "unidentified" (see :mod:`wbc.review.model`)."""
