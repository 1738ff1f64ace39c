"""Many users' engine state (image embeddings, video sessions) under one memory budget.

A :class:`SessionManager` keys each user's state (an image predictor holding its embedding, a
:class:`~sam2ui.core.video.state.VideoSession`, anything) by an unguessable id. Work on a
session happens inside ``with manager.use(session_id) as session:``, which serialises users of
one session (a per-session lock) while different sessions run in parallel. After each ``use``
block the session's memory is re-estimated (:func:`estimate_nbytes`) and the least recently
used idle sessions are evicted until the total fits the budget; a session in use is never
evicted. A long propagation runs through :meth:`SessionManager.run_cancellable` and stops
between frames when :meth:`SessionManager.cancel` is called, keeping what it has yielded.
"""

from __future__ import annotations

import secrets
import threading
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "CancellableIterator",
    "Session",
    "SessionInfo",
    "SessionManager",
    "SessionNotFound",
    "estimate_nbytes",
]

T = TypeVar("T")
PREFIX_LEN = 8  # characters of an id shown in messages and listings
_FORGET_AFTER = 1024  # how many ended sessions are remembered for error messages


# Objects the memory walk does not enter: models are shared (owned by the model cache), the
# rest hold no per-session arrays.
_OPAQUE = (
    torch.nn.Module,
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    threading.Thread,
    str,
    bytes,
    bytearray,
)


def estimate_nbytes(state: Any) -> int:
    """Bytes of the torch tensors and numpy arrays reachable from ``state``.

    Walks containers, dataclasses and objects' attributes (``__dict__`` and ``__slots__``).
    A storage shared by several tensors or views, or an array and its views, counts once.
    ``torch.nn.Module`` instances are skipped: models are shared through the model cache and
    are not a session's memory.
    """
    seen_objects: set[int] = set()
    seen_storage: set[tuple[str, int]] = set()
    total = 0
    stack: list[Any] = [state]
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, (int, float, bool, complex)) or id(obj) in seen_objects:
            continue
        seen_objects.add(id(obj))
        if isinstance(obj, torch.Tensor):
            try:
                storage = obj.untyped_storage()
            except (RuntimeError, NotImplementedError):  # sparse and other storage-less kinds
                continue
            ident = (str(obj.device), storage.data_ptr())
            if ident not in seen_storage:
                seen_storage.add(ident)
                total += storage.nbytes()
        elif isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            ident = ("numpy", id(base))
            if ident not in seen_storage:
                seen_storage.add(ident)
                total += base.nbytes
        elif isinstance(obj, _OPAQUE):
            continue
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        else:
            stack.extend(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if isinstance(name, str) and hasattr(obj, name):
                        stack.append(getattr(obj, name))
    return total


def id_prefix(session_id: str) -> str:
    """The short, non-secret form of an id used in messages and listings."""
    return session_id[:PREFIX_LEN]


class SessionNotFound(KeyError):
    """No live session has this id: it never existed, was closed, or was evicted.

    The message names only the id's prefix, so logs and error pages leak no usable id.
    """

    def __init__(self, session_id: str, reason: str = "unknown, closed or evicted") -> None:
        super().__init__(session_id)
        self.prefix = id_prefix(session_id)
        self.reason = reason

    def __str__(self) -> str:
        return f"no session {self.prefix}… ({self.reason})"


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
    """Thread-safe registry of sessions with LRU and idle eviction under a memory budget.

    Args:
        memory_budget: total bytes of session state to keep (``None``: no limit).
        max_sessions: most sessions to keep (``None``: no limit); the least recently used idle
            ones go first.
        clock: seconds as a float, for ``created``/``last_used`` and idle times (default
            ``time.monotonic``); tests pass a fake.
        estimate: bytes of one session's state (default :func:`estimate_nbytes`).
    """

    def __init__(
        self,
        memory_budget: int | None = None,
        *,
        max_sessions: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        estimate: Callable[[Any], int] = estimate_nbytes,
    ) -> None:
        if memory_budget is not None and memory_budget < 0:
            raise ValueError(f"memory_budget must be >= 0, got {memory_budget}")
        if max_sessions is not None and max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.memory_budget = memory_budget
        self.max_sessions = max_sessions
        self._clock = clock
        self._estimate = estimate
        self._lock = threading.Lock()  # guards the dicts and every Session's bookkeeping
        self._sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()  # id -> why it ended

    # ------------------------------------------------------------------ lifecycle
    def create(self, state: Any, kind: str | None = None) -> str:
        """Register ``state`` as a new session and return its id (``secrets.token_urlsafe``).

        Other idle sessions may be evicted to fit the budget; the new one is kept even if it
        alone exceeds it.
        """
        nbytes = self._estimate(state)
        now = self._clock()
        with self._lock:
            session_id = secrets.token_urlsafe(16)
            while session_id in self._sessions:  # pragma: no cover - 128 random bits
                session_id = secrets.token_urlsafe(16)
            self._sessions[session_id] = Session(
                session_id, kind or type(state).__name__, state, now, now, nbytes
            )
            evicted = self._enforce_limits(protect=session_id)
        self._close_all(evicted)
        return session_id

    def close(self, session_id: str) -> None:
        """End a session: drop it and call its state's ``close()`` if it has one.

        If another thread is using it, this waits for that ``use`` block to finish; threads
        still waiting to use it then get :class:`SessionNotFound`.
        """
        with self._lock:
            session = self._lookup(session_id)
            self._end(session, "closed")
        with session.lock:
            self._release_state(session)

    def clear(self) -> None:
        """Close every session (waiting for those in use)."""
        with self._lock:
            sessions = list(self._sessions.values())
            for session in sessions:
                self._end(session, "closed")
        for session in sessions:
            with session.lock:
                self._release_state(session)

    @contextmanager
    def use(self, session_id: str) -> Generator[Session, None, None]:
        """Hold the session exclusively for the block; yields the :class:`Session`.

        Raises :class:`SessionNotFound` for an unknown, closed or evicted id. On exit the
        session's memory is re-estimated and the budget enforced by evicting other idle
        sessions (this one is kept even if it alone exceeds the budget).
        """
        with self._lock:
            session = self._lookup(session_id)
            session.users += 1  # busy from now: never evicted while waiting or working
        try:
            with session.lock:
                if session.closed:
                    raise SessionNotFound(session_id, self._ended.get(session_id, "closed"))
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
                evicted = self._enforce_limits(protect=session.id)
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
        """Close the idle sessions unused for more than ``max_idle_s``; how many were."""
        now = self._clock()
        with self._lock:
            stale = [
                s for s in self._sessions.values() if not s.busy and now - s.last_used > max_idle_s
            ]
            for session in stale:
                self._end(session, "evicted after idling")
        self._close_all(stale)
        return len(stale)

    def _enforce_limits(self, protect: str | None = None) -> list[Session]:
        """Under ``self._lock``: end LRU idle sessions until within the limits; the ended."""
        evicted: list[Session] = []
        candidates = sorted(
            (s for s in self._sessions.values() if not s.busy and s.id != protect),
            key=lambda s: s.last_used,
        )
        total = sum(s.memory_bytes for s in self._sessions.values())
        for session in candidates:
            over_memory = self.memory_budget is not None and total > self.memory_budget
            over_count = self.max_sessions is not None and len(self._sessions) > self.max_sessions
            if not (over_memory or over_count):
                break
            total -= session.memory_bytes
            self._end(session, "evicted to free memory" if over_memory else "evicted: too many")
            evicted.append(session)
        return evicted

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
            raise SessionNotFound(str(session_id), self._ended.get(session_id, "unknown id"))
        return session

    def _end(self, session: Session, reason: str) -> None:
        """Under ``self._lock``: remove ``session``, remembering why."""
        self._sessions.pop(session.id, None)
        session.closed = True
        session.cancel_event.set()  # a run still iterating stops at its next item
        self._ended[session.id] = reason
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
