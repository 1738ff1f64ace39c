"""Points where long model work lets more urgent work through.

An image encoding (about half a second on a CPU) or a tracked frame runs as one call into the
network. When several people share one model, a click (a few milliseconds of prompt encoder
and mask decoder) must not wait for all of it. The network calls :func:`yield_point` between
its blocks; the thread running the work may install a hook with :func:`yield_hook`, and the
serving layer's scheduler uses that hook to hand the model to waiting clicks and take it back.

Without a hook (the default: notebooks, scripts, tests) :func:`yield_point` does nothing but
one thread-local lookup, and under ``torch.compile`` it is skipped so that it never breaks a
graph.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

__all__ = ["yield_hook", "yield_point"]

_local = threading.local()


def yield_point() -> None:
    """Let the current thread's hook (if any) run: a safe place to pause model work."""
    hook = getattr(_local, "hook", None)
    if hook is not None and not torch.compiler.is_compiling():
        hook()


@contextmanager
def yield_hook(hook: Callable[[], None]) -> Iterator[None]:
    """Call ``hook`` at every :func:`yield_point` this thread reaches inside the block."""
    previous = getattr(_local, "hook", None)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = previous
