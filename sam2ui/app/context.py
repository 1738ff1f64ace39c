"""What every handler of one app instance shares: the model, the sessions, the limits.

An :class:`AppContext` uses one :class:`~sam2ui.core.ModelCache` (a single model serves every
user), one :class:`~sam2ui.core.SessionManager` (each browser tab's annotators, keyed by
unguessable ids), a semaphore that bounds how many model calls run at once, and a background
thread that closes sessions left idle. It imports no gradio, so the handlers built on it are
plain functions that tests call directly.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from sam2ui.core import (
    CheckpointUnavailableError,
    ModelCache,
    ServerFull,
    SessionManager,
    SessionNotFound,
    default_model_cache,
    image_predictor,
    video_predictor,
)

from . import zerogpu
from .options import AppConfig

__all__ = [
    "AppContext",
    "UserError",
    "check_inside",
    "ended_message",
    "full_message",
    "target_object",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


class UserError(Exception):
    """Something the user can fix; the message is shown in the UI as is."""


def target_object(work: Any, obj_id: int | None) -> int:
    """The object an action applies to: ``obj_id``, else the selected one, else a new one.
    ``work`` is a tab's session state (its ``annotator`` and ``selected`` object id)."""
    ann = work.annotator
    if obj_id:
        if int(obj_id) not in ann.objects:
            raise UserError(f"There is no object {obj_id}; add one or pick another.")
        work.selected = int(obj_id)
    elif work.selected is None or work.selected not in ann.objects:
        work.selected = ann.add_object()
    return int(work.selected)


def check_inside(size: tuple[int, int], x: float, y: float, what: str) -> None:
    """UserError unless ``(x, y)`` lies on the ``(height, width)`` picture (edges included)."""
    height, width = size
    if not (np.isfinite(x) and np.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
        raise UserError(f"The point ({x:g}, {y:g}) is outside the {width}x{height} {what}.")


def full_message(full: ServerFull) -> str:
    """What a visitor refused for lack of room is told (there is no queue to join)."""
    return (
        "The server is busy: it is serving as many people as it can right now. "
        f"Please try again in {_minutes(full.retry_minutes)}."
    )


def _minutes(n: int) -> str:
    return f"{n} minute{'s' if n != 1 else ''}"


def ended_message(gone: SessionNotFound) -> str:
    """Why a user's session is gone, in words: closed, expired or evicted, and after how
    long idle."""
    ended = gone.ended
    if ended is None:
        return "This session has ended."
    idle = round(ended.idle_s / 60)
    minutes = _minutes(idle) if idle else "less than a minute"
    if ended.cause == "expired":
        return f"This session expired after {minutes} without use."
    if ended.cause == "evicted":
        return f"This session was closed to make room for others, after {minutes} without use."
    return "This session was closed."


def _weights_missing(err: Exception) -> str:
    """The banner when the weights can be neither found in the cache nor downloaded."""
    return (
        f"The model weights are not available: {err}. To use a checkpoint file on this "
        "machine, start sam2ui with --checkpoint PATH (Meta's .pt or a transformers folder)."
    )


class AppContext:
    """Shared state of one app: model cache, sessions, model-work limit, idle eviction.

    Args:
        config: the app's settings.
        cache: the model cache (default: the process-wide one that the notebook widgets and
            the command line also use, so one kernel holds one model; tests pass their own).
        sessions: the session registry (default: one sized from ``config``).
    """

    def __init__(
        self,
        config: AppConfig,
        *,
        cache: ModelCache | None = None,
        sessions: SessionManager | None = None,
    ) -> None:
        self.config = config
        self.cache = cache if cache is not None else default_model_cache()
        budget = config.memory_budget_mb
        # Not `sessions or ...`: an empty manager is falsy (it has a length).
        self.sessions = (
            sessions
            if sessions is not None
            else SessionManager(
                None if budget is None else int(budget * 2**20),
                max_sessions=config.max_sessions,
                active_window_s=config.active_window_s,
            )
        )
        self.model_error: str | None = None
        self._gate = threading.BoundedSemaphore(config.model_workers)
        self._owners: dict[str, set[str]] = defaultdict(set)  # browser session -> engine ids
        self._owners_lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # ------------------------------------------------------------------ model
    @property
    def device(self) -> str | None:
        return None if self.config.device == "auto" else self.config.device

    def load_model(self) -> bool:
        """Load the shared model now; on failure keep a message in ``model_error`` (shown by
        the UI) instead of raising. Returns whether the model is ready."""
        try:
            # The video view too: on ZeroGPU both must exist before a GPU worker is forked.
            self.cache.get_video_model(self.config.model, self.device, self.config.dtype)
        except (CheckpointUnavailableError, FileNotFoundError, ValueError, RuntimeError) as err:
            self.model_error = (
                f"The model {self.config.model!r} could not be loaded: {err}"
                if not isinstance(err, CheckpointUnavailableError)
                else _weights_missing(err)
            )
            log.warning("%s", self.model_error)
            return False
        self.model_error = None
        return True

    def _check_model(self) -> None:
        if self.model_error is not None and not self.load_model():
            raise UserError(self.model_error)

    def image_predictor(self) -> Any:
        """A new image predictor on the shared model (UserError when it cannot be loaded)."""
        self._check_model()
        try:
            return image_predictor(
                self.config.model, device=self.device, dtype=self.config.dtype, cache=self.cache
            )
        except CheckpointUnavailableError as err:
            self.model_error = _weights_missing(err)
            raise UserError(self.model_error) from err

    def video_predictor(self) -> Any:
        """A video predictor on the shared model's video view."""
        self._check_model()
        try:
            return video_predictor(
                self.config.model, device=self.device, dtype=self.config.dtype, cache=self.cache
            )
        except CheckpointUnavailableError as err:
            self.model_error = _weights_missing(err)
            raise UserError(self.model_error) from err

    @contextmanager
    def model_work(self) -> Iterator[None]:
        """Hold one of the ``model_workers`` slots: every model call runs inside this, so
        many users share the model without oversubscribing the device."""
        with self._gate:
            yield

    def call(
        self,
        method: Callable[Concatenate[T, P], R],
        obj: T,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> tuple[T, R]:
        """``method(obj, *args, **kwargs)`` as model work; returns ``(obj, result)``.
        ``method`` is an unbound method (``ImageAnnotator.add_click``) or a module-level
        function. On ZeroGPU it runs in a GPU worker on a copy of ``obj``, and the returned
        ``obj`` is the changed copy: callers must keep it in place of the old one."""
        return self.run(zerogpu.apply, method, obj, *args, **kwargs)

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` as model work (on ZeroGPU in a GPU worker; ``fn`` a
        module-level function or class, its result handed back)."""
        # ZeroGPU gives each call its own GPU and queues them itself: no model slot there.
        with nullcontext() if zerogpu.on_zero_gpu() else self.model_work():
            return zerogpu.run(fn, *args, **kwargs)

    # ------------------------------------------------------------------ sessions
    def admit(self) -> None:
        """UserError when the server has no room for another session now (before the costly
        work of a new one: an image's embedding, opening a video)."""
        try:
            self.sessions.admit()
        except ServerFull as full:
            raise UserError(full_message(full)) from None

    def create_session(self, state: Any, kind: str, owner: str | None = None) -> str:
        """Register ``state``; ``owner`` (the browser session) gets it closed on unload.
        When the server is full, ``state`` is closed and a UserError says to try later."""
        try:
            session_id = self.sessions.create(state, kind)
        except ServerFull as full:
            closer = getattr(state, "close", None)
            if callable(closer):
                closer()
            raise UserError(full_message(full)) from None
        if owner:
            with self._owners_lock:
                self._owners[owner].add(session_id)
        return session_id

    @contextmanager
    def use(self, session_id: str | None, kind: str) -> Iterator[Any]:
        """The session's state, held exclusively for the block; a missing, expired or
        foreign-kind session is a :class:`UserError` telling the user what to do."""
        what = "an image" if kind == "image" else "a video"
        if not session_id:
            raise UserError(f"Upload {what} first.")
        try:
            with self.sessions.use(session_id) as session:
                if session.kind != kind:
                    raise UserError(f"Upload {what} first.")
                yield session.state
        except SessionNotFound as gone:
            raise UserError(f"{ended_message(gone)} Upload {what} again.") from None

    def close_session(self, session_id: str | None) -> None:
        """End one session if it is still live (never raises)."""
        if not session_id:
            return
        with suppress(SessionNotFound):
            self.sessions.close(session_id)
        with self._owners_lock:
            for ids in self._owners.values():
                ids.discard(session_id)

    def close_owner(self, owner: str | None) -> int:
        """End every session of a browser session (its tab was closed); how many."""
        if not owner:
            return 0
        with self._owners_lock:
            ids = self._owners.pop(owner, set())
        for session_id in ids:
            self.close_session(session_id)
        return len(ids)

    # ------------------------------------------------------------------ idle eviction
    def start_reaper(self, interval_s: float | None = None) -> None:
        """Close idle sessions every ``interval_s`` (default: a tenth of the idle timeout,
        at most a minute) in a daemon thread; idempotent."""
        if self._reaper is not None:
            return
        every = interval_s or min(60.0, self.config.idle_timeout_s / 10)

        def run() -> None:
            while not self._stop.wait(every):
                try:
                    self.sessions.evict_idle(self.config.idle_timeout_s)
                except Exception:  # keep reaping: one bad close must not stop the thread
                    log.exception("idle eviction failed")

        self._reaper = threading.Thread(target=run, name="sam2ui-idle-reaper", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        """Stop the reaper and close every session."""
        self._stop.set()
        self.sessions.clear()
