"""The review app (``python review.py``): a technologist reviews a predict run in the browser,
reclassifies cells, adds missed ones, approves each smear's differential, and exports the
corrections as a dataset to fine-tune on. State lives in SQLite (:mod:`wbc.app.store`); the server
is FastAPI on uvicorn (:mod:`wbc.app.server`)."""
