"""Many users' engine state (image embeddings, video sessions) under one memory budget.

A :class:`SessionManager` keys each user's state (an image predictor holding its embedding, a
:class:`~sam2ui.core.video.state.VideoSession`, anything) by an unguessable id. Work on a
session happens inside ``with manager.use(session_id) as session:``, which serialises users of
one session (a per-session lock) while different sessions run in parallel. After each ``use``
block the session's memory is re-estimated (:func:`estimate_nbytes`).

Admission, not eviction of active people: a new session is admitted only when it fits the
count and memory limits, after evicting sessions unused for longer than ``active_window_s``
(least recently used first); a session used more recently, or in use, is never evicted to
make room, and the new one is refused with :class:`ServerFull` instead. Idle sessions end
by :meth:`SessionManager.evict_idle` (the app calls it with its idle timeout). A session that
is gone raises :class:`SessionNotFound`, which says whether it was closed, expired or
evicted. A long propagation runs through :meth:`SessionManager.run_cancellable` and stops
between frames when :meth:`SessionManager.cancel` is called, keeping what it has yielded.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .admission import Cause, Ended, ServerFull, SessionNotFound, id_prefix
from .footprint import estimate_nbytes

__all__ = [
    "DEFAULT_ACTIVE_WINDOW_S",
    "CancellableIterator",
    "Ended",
    "ServerFull",
    "Session",
    "SessionInfo",
    "SessionManager",
    "SessionNotFound",
    "estimate_nbytes",
]

T = TypeVar("T")
_FORGET_AFTER = 1024  # how many ended sessions are remembered for error messages
# A session used within this many seconds is never evicted to make room for another.
DEFAULT_ACTIVE_WINDOW_S = 300.0


@dataclass(eq=False)
class Session:
    """One user's engine state. Read and replace ``state`` only inside ``use``."""

    id: str
    kind: str
    state: Any
    created: float
    last_used: float
    memory_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    running: bool = False  # a run_cancellable is iterating
    users: int = 0  # threads inside or waiting for ``use``
    closed: bool = False

    @property
    def busy(self) -> bool:
        return self.users > 0


@dataclass(frozen=True)
class SessionInfo:
    """A session as :meth:`SessionManager.list_sessions` shows it (no full id)."""

    id_prefix: str
    kind: str
    created: float
    last_used: float
    memory_bytes: int
    busy: bool


class CancellableIterator(Iterator[T]):
    """Iterates ``iterable`` until ``event`` is set, checked before each item is pulled.

    On cancellation the underlying generator is closed (its ``finally`` blocks run) and
    iteration ends normally; items already yielded stay with the consumer. ``cancelled`` tells
    whether it stopped early.
    """

    def __init__(self, iterable: Iterable[T], event: threading.Event) -> None:
        self._it = iter(iterable)
        self._event = event
        self._done = False
        self.cancelled = False

    def __iter__(self) -> CancellableIterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        if self._event.is_set():
            self.cancelled = True
            self.close()
            raise StopIteration
        try:
            return next(self._it)
        except BaseException:
            self._done = True
            raise

    def close(self) -> None:
        """Stop now, closing the underlying generator if it is one."""
        self._done = True
        closer = getattr(self._it, "close", None)
        if callable(closer):
            closer()


def _close_state(state: Any) -> None:
    closer = getattr(state, "close", None)
    if callable(closer):
        closer()


class SessionManager:
    """Thread-safe registry of sessions, admitting new ones under a count and memory limit.

    Args:
        memory_budget: total bytes of session state to keep (``None``: no limit).
        max_sessions: most sessions to keep (``None``: no limit).
        active_window_s: a session used within this many seconds is never evicted to make
            room for a new one (the new one is refused with :class:`ServerFull`); older
            idle sessions are evicted, least recently used first, when room is needed.
        clock: seconds as a float, for ``created``/``last_used`` and idle times (default
            ``time.monotonic``); tests pass a fake.
        estimate: bytes of one session's state (default :func:`estimate_nbytes`).
    """

    def __init__(
        self,
        memory_budget: int | None = None,
        *,
        max_sessions: int | None = None,
        active_window_s: float = DEFAULT_ACTIVE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        estimate: Callable[[Any], int] = estimate_nbytes,
    ) -> None:
        if memory_budget is not None and memory_budget < 0:
            raise ValueError(f"memory_budget must be >= 0, got {memory_budget}")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if not (active_window_s >= 0 and math.isfinite(active_window_s)):
            raise ValueError(f"active_window_s must be >= 0, got {active_window_s}")
        self.memory_budget = memory_budget
        self.max_sessions = max_sessions
        self.active_window_s = float(active_window_s)
        self._clock = clock
        self._estimate = estimate
        self._lock = threading.Lock()  # guards the dicts and every Session's bookkeeping
        self._sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, Ended] = OrderedDict()  # id -> how it ended

    # ------------------------------------------------------------------ lifecycle
    def create(self, state: Any, kind: str | None = None) -> str:
        """Register ``state`` as a new session and return its id (``secrets.token_urlsafe``).

        Sessions idle for longer than ``active_window_s`` may be evicted to make room. When
        there is no room even so, raises :class:`ServerFull` and registers nothing (the
        caller keeps ``state``, and closes it). A session alone on the server is admitted
        even when it exceeds the memory budget.
        """
        nbytes = self._estimate(state)
        now = self._clock()
        with self._lock:
            evicted = self._make_room(nbytes, now)
            session_id = secrets.token_urlsafe(16)
            while session_id in self._sessions:  # pragma: no cover - 128 random bits
                session_id = secrets.token_urlsafe(16)
            self._sessions[session_id] = Session(
                session_id, kind or type(state).__name__, state, now, now, nbytes
            )
        self._close_all(evicted)
        return session_id

    def admit(self, nbytes: int = 0) -> None:
        """Raise :class:`ServerFull` unless a session of ``nbytes`` would be admitted now
        (evicting long-idle sessions to make room, as :meth:`create` would). Call it before
        costly work (an image's embedding) whose result would be refused."""
        with self._lock:
            evicted = self._make_room(nbytes, self._clock())
        self._close_all(evicted)

    def close(self, session_id: str) -> None:
        """End a session: drop it and call its state's ``close()`` if it has one.

        If another thread is using it, this waits for that ``use`` block to finish; threads
        still waiting to use it then get :class:`SessionNotFound`. A :meth:`run_cancellable`
        in progress is cancelled first, so it ends at its next item (a user who leaves in the
        middle of a propagation frees the model at the next frame).
        """
        with self._lock:
            session = self._lookup(session_id)
            self._end(session, "closed", self._clock())
            session.cancel_event.set()
        with session.lock:
            self._release_state(session)

    def clear(self) -> None:
        """Close every session (waiting for those in use)."""
        with self._lock:
            sessions = list(self._sessions.values())
            now = self._clock()
            for session in sessions:
                self._end(session, "closed", now)
        for session in sessions:
            with session.lock:
                self._release_state(session)

    @contextmanager
    def use(self, session_id: str) -> Generator[Session, None, None]:
        """Hold the session exclusively for the block; yields the :class:`Session`.

        Raises :class:`SessionNotFound` for an unknown, closed, expired or evicted id. On exit
        the session's memory is re-estimated; when the total is then over the budget,
        sessions idle for longer than ``active_window_s`` are evicted (never this one, nor
        any used more recently: the total may stay over the budget until they end, and new
        sessions are refused meanwhile).
        """
        with self._lock:
            session = self._lookup(session_id)
            session.users += 1  # busy from now: never evicted while waiting or working
        try:
            with session.lock:
                if session.closed:
                    raise SessionNotFound(session_id, self._ended.get(session_id))
                session.last_used = self._clock()
                try:
                    yield session
                finally:
                    nbytes = self._estimate(session.state)
                    with self._lock:
                        session.memory_bytes = nbytes
                        session.last_used = self._clock()
        finally:
            with self._lock:
                session.users -= 1
                evicted = self._evict_for(0, 0, self._clock())
            self._close_all(evicted)

    # ------------------------------------------------------------------ cancellation
    def cancel(self, session_id: str) -> bool:
        """Ask the session's running :meth:`run_cancellable` to stop before its next item;
        returns whether one is running.

        Takes effect between items (frames); the flag is cleared when the next run starts.
        """
        with self._lock:
            session = self._lookup(session_id)
            session.cancel_event.set()
            return session.running

    @contextmanager
    def cancellable(self, session_id: str) -> Iterator[threading.Event]:
        """Mark work of a session held through :meth:`use` as running for the block, and
        yield the event :meth:`cancel` sets: for work that checks a flag between its steps
        rather than being an iterable (automatic masks between batches of points)."""
        with self._lock:
            session = self._lookup(session_id)
        session.cancel_event.clear()
        session.running = True
        try:
            yield session.cancel_event
        finally:
            session.running = False
            session.cancel_event.clear()

    def run_cancellable(
        self, session_id: str, work: Iterable[T] | Callable[[Any], Iterable[T]]
    ) -> Iterator[T]:
        """Iterate ``work`` while holding the session, stopping early on :meth:`cancel`.

        ``work`` is an iterable (e.g. ``predictor.propagate_in_video(state)``) or a function of
        the session's state returning one. Items already yielded are kept by the caller; the
        session stays usable afterwards. The session is held until the iterator ends or is
        closed, so consume it fully or close it.
        """
        with self.use(session_id) as session:
            session.cancel_event.clear()
            session.running = True
            try:
                iterable = work(session.state) if callable(work) else work
                items = CancellableIterator(iterable, session.cancel_event)
                try:
                    yield from items
                finally:
                    items.close()
            finally:
                session.running = False
                session.cancel_event.clear()

    # ------------------------------------------------------------------ eviction
    def evict_idle(self, max_idle_s: float) -> int:
        """End the sessions not in use and unused for more than ``max_idle_s`` (they
        "expired"); returns how many."""
        now = self._clock()
        with self._lock:
            stale = [
                s for s in self._sessions.values() if not s.busy and now - s.last_used > max_idle_s
            ]
            for session in stale:
                self._end(session, "expired", now)
        self._close_all(stale)
        return len(stale)

    def _evictable(self, now: float) -> list[Session]:
        """Under ``self._lock``: sessions that may be evicted to make room, LRU first."""
        return sorted(
            (
                s
                for s in self._sessions.values()
                if not s.busy and now - s.last_used > self.active_window_s
            ),
            key=lambda s: s.last_used,
        )

    def _over(self, count: int, total: int) -> Literal["sessions", "memory"] | None:
        if self.max_sessions is not None and count > self.max_sessions:
            return "sessions"
        if self.memory_budget is not None and total > self.memory_budget and count > 1:
            return "memory"
        return None

    def _evict_for(self, new_sessions: int, new_bytes: int, now: float) -> list[Session]:
        """Under ``self._lock``: evict LRU sessions idle past the active window until
        ``new_sessions`` more sessions of ``new_bytes`` fit, or none is left to evict; the
        evicted sessions."""
        count = len(self._sessions) + new_sessions
        total = sum(s.memory_bytes for s in self._sessions.values()) + new_bytes
        evicted: list[Session] = []
        for session in self._evictable(now):
            if self._over(count, total) is None:
                break
            count -= 1
            total -= session.memory_bytes
            self._end(session, "evicted", now)
            evicted.append(session)
        return evicted

    def _make_room(self, nbytes: int, now: float) -> list[Session]:
        """Under ``self._lock``: room for one more session of ``nbytes`` (evicting sessions
        idle past the active window, only when that makes it fit), or :class:`ServerFull`."""
        candidates = self._evictable(now)
        count = len(self._sessions) + 1
        total = sum(s.memory_bytes for s in self._sessions.values()) + nbytes
        needed = 0
        for session in candidates:
            if self._over(count, total) is None:
                break
            count -= 1
            total -= session.memory_bytes
            needed += 1
        what = self._over(count, total)
        if what is not None:
            protected = [s for s in self._sessions.values() if s not in candidates]
            idle = [s.last_used + self.active_window_s - now for s in protected if not s.busy]
            raise ServerFull(
                what,
                live=len(self._sessions),
                retry_after_s=min(idle) if idle else 60.0,
            )
        for session in candidates[:needed]:
            self._end(session, "evicted", now)
        return candidates[:needed]

    # ------------------------------------------------------------------ queries
    def list_sessions(self) -> list[SessionInfo]:
        """Every live session, oldest first, with id prefixes only."""
        with self._lock:
            return [
                SessionInfo(id_prefix(s.id), s.kind, s.created, s.last_used, s.memory_bytes, s.busy)
                for s in sorted(self._sessions.values(), key=lambda s: s.created)
            ]

    def total_memory(self) -> int:
        """Bytes of all live sessions, as last estimated."""
        with self._lock:
            return sum(s.memory_bytes for s in self._sessions.values())

    def ended(self, session_id: str) -> Ended | None:
        """How a recently ended session ended (None: live, unknown, or long forgotten)."""
        with self._lock:
            return self._ended.get(session_id)

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._sessions

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    # ------------------------------------------------------------------ internals
    def _lookup(self, session_id: str) -> Session:
        """Under ``self._lock``: the live session or :class:`SessionNotFound`."""
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            ended = self._ended.get(session_id) if isinstance(session_id, str) else None
            raise SessionNotFound(str(session_id), ended)
        return session

    def _end(self, session: Session, cause: Cause, now: float) -> None:
        """Under ``self._lock``: remove ``session``, remembering how it ended."""
        self._sessions.pop(session.id, None)
        session.closed = True
        session.cancel_event.set()  # a run still iterating stops at its next item
        self._ended[session.id] = Ended(cause, max(0.0, now - session.last_used))
        while len(self._ended) > _FORGET_AFTER:
            self._ended.popitem(last=False)

    @staticmethod
    def _release_state(session: Session) -> None:
        state, session.state = session.state, None
        session.memory_bytes = 0
        _close_state(state)

    def _close_all(self, sessions: list[Session]) -> None:
        """Release ended idle sessions (outside ``self._lock``)."""
        for session in sessions:
            with session.lock:
                self._release_state(session)
