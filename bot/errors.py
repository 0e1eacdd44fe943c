"""The error family whose text is what a member reads."""

from __future__ import annotations


class EaselError(Exception):
    """An error a member or operator can act on; ``str()`` is the message shown to them."""


class InvalidInput(EaselError):
    """The request itself is wrong: the message names what to change."""


class LimitReached(EaselError):
    """A queue or rate limit refuses the request; nothing was enqueued."""


class NotFound(EaselError):
    """The job, image or message the member refers to no longer exists (or is not theirs to see)."""

    @classmethod
    def row(cls, kind: str, row_id: int) -> NotFound:
        """Say that job, challenge or entry ``row_id`` does not exist; another guild's reads the same."""
        return cls(f"{kind.capitalize()} #{row_id} does not exist.")


class NotAllowed(EaselError):
    """The member may not do this to this job."""


class RenderFailed(EaselError):
    """A renderer could not produce images; ``str()`` is safe to show to the member.

    ``retryable`` says whether the one retry policy may try again; ``charge`` is always
    false for failures (nothing is charged for a failed job).
    """

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ContentRefused(RenderFailed):
    """The backend's safety system refused the prompt or image."""


class ConfigError(EaselError):
    """The operator's configuration is invalid; the message names the key and the fix."""
