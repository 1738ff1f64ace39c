"""Why a session cannot be had: the server is full (:class:`ServerFull`), or the session is
gone (:class:`SessionNotFound`, saying whether it was closed, expired or evicted).

The session manager admits a new session only when there is room for it: under its count
and memory limits, after evicting sessions idle for longer than its active window. Sessions
used more recently are never evicted to make room, so a person between two clicks keeps
their work; a new visitor is refused instead, and told when to try again.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["Ended", "ServerFull", "SessionNotFound", "id_prefix"]

PREFIX_LEN = 8  # characters of an id's tag (a hash) shown in messages and listings

Cause = Literal["closed", "expired", "evicted"]


def id_prefix(session_id: str) -> str:
    """The short, non-secret tag of an id used in messages, logs and listings: the start of
    its SHA-256, so that nothing of the id itself is shown."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:PREFIX_LEN]


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f}" if minutes >= 10 else f"{minutes:.1f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class Ended:
    """How a session ended: ``closed`` (by its owner or at shutdown), ``expired`` (unused
    for longer than the idle timeout), or ``evicted`` (to make room for another, after it
    had been unused for longer than the active window); ``idle_s``: how long it had been
    unused then."""

    cause: Cause
    idle_s: float = 0.0

    def describe(self) -> str:
        if self.cause == "expired":
            return f"expired after {_minutes(self.idle_s)} minutes idle"
        if self.cause == "evicted":
            return f"evicted to make room after {_minutes(self.idle_s)} minutes idle"
        return "closed"


class SessionNotFound(KeyError):
    """No live session has this id: it never existed, was closed, expired or was evicted
    (``ended`` says which, when known).

    The message (and ``args``) name only the id's tag (:func:`id_prefix`, a hash), so logs
    and error pages leak nothing of the id.
    """

    def __init__(self, session_id: str, ended: Ended | None = None) -> None:
        self.prefix = id_prefix(session_id)
        super().__init__(self.prefix)
        self.ended = ended

    @property
    def reason(self) -> str:
        return "unknown id" if self.ended is None else self.ended.describe()

    def __str__(self) -> str:
        return f"no session {self.prefix}… ({self.reason})"


class ServerFull(Exception):
    """No room for a new session: the live sessions fill the count limit (``what`` is
    ``"sessions"``) or the memory budget (``"memory"``), and none has been idle long enough
    to be evicted. ``retry_after_s``: when the first of them may become evictable (if it
    stays unused), at least a few seconds."""

    def __init__(
        self, what: Literal["sessions", "memory"], *, live: int, retry_after_s: float
    ) -> None:
        self.what = what
        self.live = live
        self.retry_after_s = max(5.0, float(retry_after_s))
        super().__init__(str(self))

    @property
    def retry_minutes(self) -> int:
        """``retry_after_s`` in whole minutes, at least 1."""
        return max(1, math.ceil(self.retry_after_s / 60))

    def __str__(self) -> str:
        full = "every session slot" if self.what == "sessions" else "the memory budget"
        return (
            f"the server is full: {self.live} people hold {full}; "
            f"try again in {self.retry_minutes} minute{'s' if self.retry_minutes > 1 else ''}"
        )
