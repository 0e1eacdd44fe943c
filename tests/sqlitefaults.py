"""SQLite that fails one job transition the way a locked database or a full disk does, for end-to-end tests.

The bot's store is untouched: the test swaps the stdlib ``sqlite3.connect`` (which aiosqlite
calls on its own thread) for one that builds connections of a subclass that raises the real
``sqlite3.OperationalError`` on the chosen ``UPDATE jobs SET status = ...`` statement.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

LOCKED = "database is locked"  # SQLITE_BUSY after busy_timeout ran out
FULL = "database or disk is full"  # SQLITE_FULL
TRANSITION = re.compile(r"\s*UPDATE\s+jobs\s+SET\s+status\s*=\s*\?", re.IGNORECASE)


@dataclass
class _Rule:
    status: str
    error: str
    remaining: int


class SQLiteFaults:
    """Rules that make SQLite refuse given job transitions; ``fired`` lists (status, error) as they hit."""

    def __init__(self) -> None:
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()  # statements run on aiosqlite's thread
        self.fired: list[tuple[str, str]] = []

    def fail(self, status: str, error: str, *, times: int = 1) -> None:
        """Make the next ``times`` transitions of any job to ``status`` raise ``error``."""
        with self._lock:
            self._rules.append(_Rule(status, error, times))

    def check(self, sql: str, parameters: Iterable[Any]) -> None:
        """Raise the error of a rule that matches this statement."""
        if not TRANSITION.match(sql):
            return
        status = next(iter(parameters), None)
        with self._lock:
            for rule in self._rules:
                if rule.remaining > 0 and rule.status == status:
                    rule.remaining -= 1
                    self.fired.append((rule.status, rule.error))
                    raise sqlite3.OperationalError(rule.error)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Route every new SQLite connection of this test through these rules."""
        faults = self
        connect = sqlite3.connect

        class FaultyConnection(sqlite3.Connection):
            def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
                faults.check(sql, parameters)
                return super().execute(sql, parameters)

        def faulty_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            return connect(*args, factory=FaultyConnection, **kwargs)

        monkeypatch.setattr(sqlite3, "connect", faulty_connect)
