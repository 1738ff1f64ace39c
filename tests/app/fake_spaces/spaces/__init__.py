"""A stand-in for Hugging Face's ``spaces`` package, for tests of the app's ZeroGPU path.

It keeps what matters to the app: each call of a ``spaces.GPU`` function runs in a process
forked for that call, arguments and results cross by pickling, and nothing the call changes
in place comes back. Generator functions send their items one at a time; the worker goes on
only when the caller asks for the next item, which makes cancellation tests deterministic.
``calls`` counts the calls made through it (in the calling process).
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import inspect
import multiprocessing
import pickle
import traceback
from collections.abc import Callable, Iterator
from typing import Any

WORKER_TIMEOUT_S = 120  # a stuck worker prints where it is and exits, failing the test
calls = {"function": 0, "generator": 0}


class WorkerError(RuntimeError):
    """The worker raised (the real package turns these into a generic gradio error)."""


def _send_error(conn: Any, err: BaseException) -> None:
    conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def _function_worker(task: Callable[..., Any], payload: bytes, conn: Any) -> None:
    faulthandler.dump_traceback_later(WORKER_TIMEOUT_S, exit=True)
    try:
        args, kwargs = pickle.loads(payload)
        conn.send(("ok", pickle.dumps(task(*args, **kwargs))))
    except BaseException as err:
        _send_error(conn, err)
    conn.close()


def _generator_worker(task: Callable[..., Iterator[Any]], payload: bytes, conn: Any) -> None:
    faulthandler.dump_traceback_later(WORKER_TIMEOUT_S, exit=True)
    try:
        args, kwargs = pickle.loads(payload)
        for item in task(*args, **kwargs):
            conn.send(("item", pickle.dumps(item)))
            if conn.recv() != "next":
                return
        conn.send(("end", None))
    except BaseException as err:
        _send_error(conn, err)
    conn.close()


def _start(target: Callable[..., None], task: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    # Asked for here, not at import: importing works where there is no fork (Windows).
    _fork = multiprocessing.get_context("fork")
    parent, child = _fork.Pipe()
    process = _fork.Process(target=target, args=(task, pickle.dumps((args, kwargs)), child))
    process.start()
    child.close()
    return process, parent


def GPU(task: Callable[..., Any] | None = None, *, duration: Any = None, size: Any = None) -> Any:
    """The decorator: ``@GPU``, ``@GPU(duration=...)``."""
    if task is None:
        return functools.partial(GPU, duration=duration, size=size)
    if inspect.isgeneratorfunction(task):

        @functools.wraps(task)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            calls["generator"] += 1
            process, conn = _start(_generator_worker, task, args, kwargs)
            try:
                while True:
                    kind, value = conn.recv()
                    if kind == "error":
                        raise WorkerError(value)
                    if kind == "end":
                        return
                    yield pickle.loads(value)
                    conn.send("next")
            finally:
                if process.is_alive():
                    with contextlib.suppress(OSError):
                        conn.send("stop")  # the caller stopped early: the worker ends too
                conn.close()
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()

        return generator

    @functools.wraps(task)
    def function(*args: Any, **kwargs: Any) -> Any:
        calls["function"] += 1
        process, conn = _start(_function_worker, task, args, kwargs)
        try:
            kind, value = conn.recv()
        finally:
            conn.close()
            process.join(timeout=30)
        if kind == "error":
            raise WorkerError(value)
        return pickle.loads(value)

    return function
