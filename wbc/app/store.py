"""The review app's state in SQLite: runs, smears, cells, every correction (old value, new value,
who, when) and approvals. WAL journal and one transaction per action, so that a server killed at any
moment loses nothing that was acknowledged, and a second process on the same file waits instead of
corrupting it (busy timeout)."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

NOT_A_CELL = "not a cell"
UNIDENTIFIED = "unidentified"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, path TEXT NOT NULL UNIQUE, imported_at REAL NOT NULL,
    wbc_classes TEXT NOT NULL, nrbc_classes TEXT NOT NULL, classes TEXT NOT NULL, attributes TEXT NOT NULL, summary TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS smears (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), image TEXT NOT NULL, path TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, approved_by TEXT, approved_at REAL, approved_differential TEXT,
    UNIQUE (run_id, image));
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY, smear_id INTEGER NOT NULL REFERENCES smears(id), x1 REAL, y1 REAL, x2 REAL, y2 REAL,
    predicted TEXT NOT NULL, predicted_bin TEXT NOT NULL, label TEXT NOT NULL, confidence REAL, type_probability REAL,
    ood REAL, reason TEXT NOT NULL DEFAULT '', attributes TEXT NOT NULL DEFAULT '{}', added INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS cells_by_smear ON cells (smear_id);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY, cell_id INTEGER NOT NULL REFERENCES cells(id), kind TEXT NOT NULL, old TEXT, new TEXT,
    user TEXT NOT NULL, at REAL NOT NULL, undone INTEGER NOT NULL DEFAULT 0);
"""


class StoreError(ValueError):
    """A request the store refuses (unknown cell, label, approved smear): the server answers 4xx."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed action survives the process being killed
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # --- import -----------------------------------------------------------------------------------
    def import_run(self, run_dir: str | Path) -> int:
        """Add a predict run (its cells.json and summary.json) once; a run already imported keeps its corrections."""
        run_dir = Path(run_dir).resolve()
        row = self.db.execute("SELECT id FROM runs WHERE path = ?", (str(run_dir),)).fetchone()
        if row:
            return row["id"]
        cells_json, summary_json = run_dir / "cells.json", run_dir / "summary.json"
        for f in (cells_json, summary_json):
            if not f.is_file():
                raise FileNotFoundError(f"{f} not found: point review.py at a predict.py run folder (runs/predict/<name>)")
        fields = json.loads(cells_json.read_text())
        summary = json.loads(summary_json.read_text())
        seen = {c["class"] for f in fields for c in f["cells"]} | set(summary["wbc_classes"])
        classes = list(summary.get("classes") or sorted(seen))  # the model's class order, so that an export fine-tunes it as it is
        classes += sorted(seen - set(classes))
        attributes = sorted({k[:-len("_probability")] for f in fields for c in f["cells"] for k in c if k.endswith("_probability")
                             and k not in ("type_probability", "call_probability")})
        with self.transaction() as db:
            run_id = db.execute("INSERT INTO runs (name, path, imported_at, wbc_classes, nrbc_classes, classes, attributes, summary) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                (run_dir.name, str(run_dir), time.time(), json.dumps(summary["wbc_classes"]),
                                 json.dumps(summary.get("nrbc_classes", [])), json.dumps(classes), json.dumps(attributes),
                                 json.dumps(summary))).lastrowid
            for f in fields:
                smear_id = db.execute("INSERT INTO smears (run_id, image, path, width, height) VALUES (?, ?, ?, ?, ?)",
                                      (run_id, f["image"], str(Path(f["path"]).resolve()), f["width"], f["height"])).lastrowid
                db.executemany(
                    "INSERT INTO cells (smear_id, x1, y1, x2, y2, predicted, predicted_bin, label, confidence, type_probability, ood, "
                    "reason, attributes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(smear_id, c["x1"], c["y1"], c["x2"], c["y2"], c["class"], c["bin"], c["bin"], c["confidence"],
                      c.get("type_probability"), c.get("ood"), c.get("review", ""),
                      json.dumps({a: [c[a], c[f"{a}_probability"]] for a in attributes if a in c})) for c in f["cells"]])
        return run_id

    # --- reading ----------------------------------------------------------------------------------
    def runs(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM runs ORDER BY id").fetchall()

    def run(self, run_id: int) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise StoreError(f"no run {run_id}")
        return row

    def smears(self, run_id: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM smears WHERE run_id = ? ORDER BY image", (run_id,)).fetchall()

    def smear(self, smear_id: int) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM smears WHERE id = ?", (smear_id,)).fetchone()
        if row is None:
            raise StoreError(f"no smear {smear_id}")
        return row

    def cell(self, cell_id: int) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM cells WHERE id = ?", (cell_id,)).fetchone()
        if row is None:
            raise StoreError(f"no cell {cell_id}")
        return row

    def cells(self, run_id: int, label: str | None = None, smear_id: int | None = None) -> list[sqlite3.Row]:
        """Cells of a run (optionally of one current label or one smear), least confident first."""
        sql, args = "SELECT cells.* FROM cells JOIN smears ON smears.id = cells.smear_id WHERE smears.run_id = ?", [run_id]
        if label is not None:
            sql, args = sql + " AND cells.label = ?", [*args, label]
        if smear_id is not None:
            sql, args = sql + " AND cells.smear_id = ?", [*args, smear_id]
        return self.db.execute(sql + " ORDER BY COALESCE(cells.type_probability, cells.confidence), cells.id", args).fetchall()

    def labels(self, run_id: int) -> list[str]:
        """What a cell can be called in this run: unidentified, the model's classes in its order, not a cell."""
        run = self.run(run_id)
        classes = json.loads(run["classes"])
        return [UNIDENTIFIED, *[c for c in classes if c != UNIDENTIFIED], NOT_A_CELL]

    def differential(self, run_id: int, smear_id: int | None = None) -> dict:
        """Counts per current label: WBC types and unidentified (the differential, with %), NRBC per 100 WBC, other cells."""
        run = self.run(run_id)
        wbc, nrbc = json.loads(run["wbc_classes"]), set(json.loads(run["nrbc_classes"]))
        sql = "SELECT label, COUNT(*) AS n FROM cells JOIN smears ON smears.id = cells.smear_id WHERE smears.run_id = ?"
        args = [run_id]
        if smear_id is not None:
            sql, args = sql + " AND cells.smear_id = ?", [*args, smear_id]
        counts = {r["label"]: r["n"] for r in self.db.execute(sql + " GROUP BY label", args)}
        bins = [UNIDENTIFIED, *[c for c in wbc if c not in nrbc]]
        n = sum(counts.get(b, 0) for b in bins)
        return {"wbc": n, "per_class": {b: {"count": counts.get(b, 0), "percent": 100 * counts.get(b, 0) / n if n else 0.0} for b in bins},
                "nrbc": {c: {"count": counts.get(c, 0), "per_100_wbc": 100 * counts.get(c, 0) / n if n else 0.0} for c in sorted(nrbc)},
                "other": {k: v for k, v in sorted(counts.items()) if k not in bins and k not in nrbc}}

    def corrections(self, run_id: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT corrections.* FROM corrections JOIN cells ON cells.id = corrections.cell_id JOIN smears ON "
                               "smears.id = cells.smear_id WHERE smears.run_id = ? ORDER BY corrections.id", (run_id,)).fetchall()

    # --- actions (one transaction each) -----------------------------------------------------------
    def _editable(self, db, smear_id: int) -> None:
        smear = db.execute("SELECT approved_at FROM smears WHERE id = ?", (smear_id,)).fetchone()
        if smear is None:
            raise StoreError(f"no smear {smear_id}")
        if smear["approved_at"] is not None:
            raise StoreError(f"smear {smear_id} is approved: its differential is signed out and frozen")

    def relabel(self, cell_ids: list[int], label: str, user: str) -> list[dict]:
        """Give cells a new label; returns [{cell, old, new}] (cells already so labelled are left alone)."""
        changed, allowed = [], {}
        with self.transaction() as db:
            for cell_id in cell_ids:
                cell = db.execute("SELECT cells.*, smears.run_id FROM cells JOIN smears ON smears.id = cells.smear_id WHERE cells.id = ?",
                                  (cell_id,)).fetchone()
                if cell is None:
                    raise StoreError(f"no cell {cell_id}")
                if cell["run_id"] not in allowed:  # one lookup per run, not per cell of a bulk relabel
                    allowed[cell["run_id"]] = label in self.labels(cell["run_id"])
                if not allowed[cell["run_id"]]:
                    raise StoreError(f"{label!r} is not a label of this run")

                self._editable(db, cell["smear_id"])
                if cell["label"] == label:
                    continue
                db.execute("UPDATE cells SET label = ? WHERE id = ?", (label, cell_id))
                db.execute("INSERT INTO corrections (cell_id, kind, old, new, user, at) VALUES (?, 'label', ?, ?, ?, ?)",
                           (cell_id, cell["label"], label, user, time.time()))
                changed.append({"cell": cell_id, "old": cell["label"], "new": label})
        return changed

    def add_cell(self, smear_id: int, box: tuple[float, float, float, float], label: str, user: str) -> int:
        """A cell the detector missed, boxed by the reviewer."""
        smear = self.smear(smear_id)
        if label not in self.labels(smear["run_id"]):
            raise StoreError(f"{label!r} is not a label of this run")
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((max(0.0, min(x1, smear["width"])), max(0.0, min(x2, smear["width"]))))
        y1, y2 = sorted((max(0.0, min(y1, smear["height"])), max(0.0, min(y2, smear["height"]))))
        if x2 - x1 < 2 or y2 - y1 < 2:
            raise StoreError(f"box {box} is empty inside the {smear['width']}x{smear['height']} field")
        with self.transaction() as db:
            self._editable(db, smear_id)
            cell_id = db.execute("INSERT INTO cells (smear_id, x1, y1, x2, y2, predicted, predicted_bin, label, added) "
                                 "VALUES (?, ?, ?, ?, ?, '', '', ?, 1)", (smear_id, x1, y1, x2, y2, label)).lastrowid
            db.execute("INSERT INTO corrections (cell_id, kind, old, new, user, at) VALUES (?, 'added', NULL, ?, ?, ?)",
                       (cell_id, label, user, time.time()))
        return cell_id

    def undo(self, run_id: int, user: str) -> dict | None:
        """Take back the user's last correction in this run that is not yet undone (on a smear not approved)."""
        with self.transaction() as db:
            last = db.execute("SELECT corrections.*, cells.smear_id FROM corrections JOIN cells ON cells.id = corrections.cell_id "
                              "JOIN smears ON smears.id = cells.smear_id WHERE smears.run_id = ? AND corrections.user = ? AND "
                              "corrections.undone = 0 AND smears.approved_at IS NULL ORDER BY corrections.id DESC LIMIT 1",
                              (run_id, user)).fetchone()
            if last is None:
                return None
            db.execute("UPDATE corrections SET undone = 1 WHERE id = ?", (last["id"],))
            if last["kind"] == "added":
                db.execute("UPDATE cells SET label = ? WHERE id = ?", (NOT_A_CELL, last["cell_id"]))
            else:
                db.execute("UPDATE cells SET label = ? WHERE id = ?", (last["old"], last["cell_id"]))
        return {"cell": last["cell_id"], "kind": last["kind"], "restored": last["old"]}

    def approve(self, smear_id: int, user: str) -> dict:
        """Sign the smear's differential out: it is stored as it is now, and the smear's cells are frozen."""
        if not user.strip():
            raise StoreError("approving needs the reviewer's name")
        smear = self.smear(smear_id)
        differential = self.differential(smear["run_id"], smear_id)
        with self.transaction() as db:
            self._editable(db, smear_id)
            db.execute("UPDATE smears SET approved_by = ?, approved_at = ?, approved_differential = ? WHERE id = ?",
                       (user, time.time(), json.dumps(differential), smear_id))
        return differential
