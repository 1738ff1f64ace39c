"""What every handler of one app instance shares: the model, the sessions, the limits.

An :class:`AppContext` uses one :class:`~sam2ui.core.ModelCache` (a single model serves every
user), one :class:`~sam2ui.core.SessionManager` (each browser tab's annotators, keyed by
unguessable ids), a semaphore that bounds how many model calls run at once, and a background
thread that closes sessions left idle. It imports no gradio, so the handlers built on it are
plain functions that tests call directly.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from sam2ui.core import (
    THREADS_VARIABLE,
    CheckpointUnavailableError,
    FreeCpus,
    Lane,
    ModelCache,
    ModelScheduler,
    ServerFull,
    SessionManager,
    SessionNotFound,
    compile_model,
    configure_threads,
    default_model_cache,
    image_predictor,
    is_compiled,
    video_predictor,
    warm_up,
)

from . import zerogpu
from .errors import UserError
from .options import AppConfig

__all__ = [
    "AppContext",
    "UserError",
    "check_inside",
    "ended_message",
    "full_message",
    "model_name",
    "target_object",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


def _existing(work: Any, obj_id: int) -> int:
    """``obj_id`` when the tab's session has that object; else the app's one message for it."""
    if obj_id not in work.annotator.objects:
        raise UserError(f"There is no object {obj_id}; add one or pick another.")
    return obj_id


def chosen_object(work: Any, obj_id: int | None, doing: str) -> int:
    """The existing object an action applies to: ``obj_id``, else the selected one (an error
    that says to select one to ``doing`` when there is none)."""
    target = int(obj_id) if obj_id else work.selected
    if target is None:
        raise UserError(f"Select an object to {doing}.")
    return _existing(work, int(target))


def target_object(work: Any, obj_id: int | None) -> int:
    """The object an action applies to: ``obj_id``, else the selected one, else a new one.
    ``work`` is a tab's session state (its ``annotator`` and ``selected`` object id)."""
    ann = work.annotator
    if obj_id:
        work.selected = _existing(work, int(obj_id))
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


def model_name(model: str) -> str:
    """How the browser is told which model: a hub id or variant name as it is, a local
    checkpoint by its file or folder name only (never the server's path)."""
    path = Path(model).expanduser()
    return path.name if path.is_absolute() or path.exists() else model


def _weights_missing(model: str, err: Exception) -> str:
    """The banner when the weights can be neither found in the cache nor downloaded: the
    model's name and the download command, never the server's paths (those go to the log)."""
    command = re.search(r"`(hf download [^`]+)`", str(err))
    fetch = f"run `{command.group(1)}` where the hub is reachable, or " if command else ""
    return (
        f"The weights of {model_name(model)} are not on this server and cannot be downloaded "
        "now; the server keeps trying in the background, so try again in a few minutes. "
        f"To fix it, the server's administrator can {fetch}start sam2ui with --checkpoint PATH."
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
        self.cpus: FreeCpus | None = None
        threads = config.threads
        if threads is None:
            threads = os.environ.get(THREADS_VARIABLE, "").strip().lower() or None
        if threads is None or threads == "auto":
            if not zerogpu.on_zero_gpu():
                self.cpus = FreeCpus()  # set before each model call
        else:
            configure_threads(int(threads))
        self.scheduler = ModelScheduler(
            config.model_workers, on_grant=self.cpus.apply if self.cpus is not None else None
        )
        self._logged_error: str | None = None
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
            if self.config.compile and not zerogpu.on_zero_gpu():
                self._compile()  # (on ZeroGPU the model is on the CPU until a GPU call)
        except (CheckpointUnavailableError, FileNotFoundError, ValueError, RuntimeError) as err:
            self.model_error = (
                _weights_missing(self.config.model, err)
                if isinstance(err, CheckpointUnavailableError)
                else f"The model {model_name(self.config.model)} could not be loaded; the "
                "server's log says why."
            )
            if self._logged_error != str(err):  # once per cause, not on every action
                self._logged_error = str(err)
                log.warning("the model %s could not be loaded: %s", self.config.model, err)
            return False
        self.model_error = None
        return True

    def _compile(self) -> None:
        """Compile the shared model (once) and warm it up before anyone uses it."""
        video = video_predictor(
            self.config.model, device=self.device, dtype=self.config.dtype, cache=self.cache
        )
        if is_compiled(video.model):
            return
        compile_model(video.model)  # its modules are the image model's too
        log.info("compiling the model %s (a warm-up on made-up frames)...", self.config.model)
        seconds = warm_up(video) + warm_up(image_predictor(
            self.config.model, device=self.device, dtype=self.config.dtype, cache=self.cache
        ))  # fmt: skip
        log.info("the model %s is compiled (%.1f s)", self.config.model, seconds)

    def model_banner(self) -> str | None:
        """The model's message for a page being opened (None when the model is fine); a
        remembered failure is checked again, which costs nothing while it lasts."""
        if self.model_error is not None:
            self.load_model()
        return self.model_error

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
            log.warning("the model %s could not be loaded: %s", self.config.model, err)
            self.model_error = _weights_missing(self.config.model, err)
            raise UserError(self.model_error) from None

    def video_predictor(self) -> Any:
        """A video predictor on the shared model's video view."""
        self._check_model()
        try:
            return video_predictor(
                self.config.model, device=self.device, dtype=self.config.dtype, cache=self.cache
            )
        except CheckpointUnavailableError as err:
            log.warning("the model %s could not be loaded: %s", self.config.model, err)
            self.model_error = _weights_missing(self.config.model, err)
            raise UserError(self.model_error) from None

    @contextmanager
    def model_work(self, lane: Lane = Lane.INTERACTIVE) -> Iterator[None]:
        """Hold one of the ``model_workers`` slots: every model call runs inside this, so
        many users share the model without oversubscribing the device. Interactive work
        (clicks) goes before heavy work (encodings, tracked frames), and heavy work lets
        waiting clicks pass between the network's blocks (:class:`~sam2ui.core.ModelScheduler`)."""
        with self.scheduler.slot(lane):
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
        ``obj`` is the changed copy: callers must keep it in place of the old one.
        It runs in the interactive lane: quick work (a click, a box, an undo)."""
        return self.run(zerogpu.apply, method, obj, *args, **kwargs)

    def call_heavy(
        self,
        method: Callable[Concatenate[T, P], R],
        obj: T,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> tuple[T, R]:
        """:meth:`call` in the heavy lane: work that runs the image encoder or the memory
        attention (an upload's encoding, automatic masks), which clicks may pass."""
        return self.run_heavy(zerogpu.apply, method, obj, *args, **kwargs)

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` as interactive model work (on ZeroGPU in a GPU worker;
        ``fn`` a module-level function or class, its result handed back)."""
        return self._run(Lane.INTERACTIVE, fn, *args, **kwargs)

    def run_heavy(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """:meth:`run` in the heavy lane."""
        return self._run(Lane.HEAVY, fn, *args, **kwargs)

    def _run(self, lane: Lane, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # ZeroGPU gives each call its own GPU and queues them itself: no model slot there.
        with nullcontext() if zerogpu.on_zero_gpu() else self.model_work(lane):
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
    def use(self, session_id: str | None, kind: str, *, action: bool = False) -> Iterator[Any]:
        """The session's state, held exclusively for the block; a missing, expired or
        foreign-kind session is a :class:`UserError` telling the user what to do.

        ``action``: the block is one interactive action (a click, a box, an undo: a quick
        model call and the view drawn from it). Heavy work of other people waits while it
        runs (:meth:`~sam2ui.core.ModelScheduler.interactive`), so the drawing after the
        model call gets the cores too. Not for blocks that yield (generators)."""
        what = "an image" if kind == "image" else "a video"
        if not session_id:
            raise UserError(f"Upload {what} first.")
        quick = action and not zerogpu.on_zero_gpu()
        try:
            with self.sessions.use(session_id) as session:
                if session.kind != kind:
                    raise UserError(f"Upload {what} first.")
                with self.scheduler.interactive() if quick else nullcontext():
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
