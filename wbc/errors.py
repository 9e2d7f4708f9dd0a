"""Dataset problems: fatal ones raise, recoverable ones are counted with their location."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class UsageError(ValueError):
    """Arguments that cannot work together; the message says what to pass instead."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C; the message says what was written and how it is marked."""


class DatasetError(ValueError):
    """A fatal problem in a dataset file; the message names the file and, where known, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path, self.line, self.reason = str(path), line, message
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Problem:
    """A skipped or repaired item. ``action`` is 'skipped' or 'repaired'; ``reason`` is a fixed phrase."""

    split: str
    action: str
    reason: str
    path: str
    line: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        detail = f" ({self.detail})" if self.detail else ""
        return f"[{self.split}] {self.action}: {self.reason}: {where}{detail}"


@dataclass
class ProblemLog:
    """Every item an importer skipped or repaired, so that nothing disappears uncounted."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, split: str, action: str, reason: str, path, line: int | None = None, detail: str = "") -> None:
        assert action in ("skipped", "repaired", "noted"), action
        self.problems.append(Problem(split, action, reason, str(path), line, detail))

    def counts(self, split: str | None = None) -> Counter:
        """Counter keyed by (action, reason)."""
        return Counter((p.action, p.reason) for p in self.problems if split is None or p.split == split)
