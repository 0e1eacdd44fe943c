"""What the store raises: typed facts about rows, never text for members.

The services that call the store turn these into the ``EaselError`` a member reads (see
``bot.errors``); anything that reaches the tree unmapped is a bug and is logged as one.
"""

from __future__ import annotations


class StoreError(Exception):
    """A request the stored state cannot satisfy."""


class RowMissing(StoreError, LookupError):
    """No ``kind`` row with this id (for a guild-scoped lookup: none in that guild either)."""

    def __init__(self, kind: str, row_id: int) -> None:
        super().__init__(f"no {kind} with id {row_id}")
        self.kind = kind
        self.id = row_id


class TransitionRefused(StoreError):
    """A job is in a state from which the wanted state cannot be reached (``bot.jobs.TRANSITIONS``)."""

    def __init__(self, job_id: int, current: str, wanted: str) -> None:
        super().__init__(f"job {job_id} is {current} and cannot become {wanted}")
        self.job_id = job_id
        self.current = current
        self.wanted = wanted
