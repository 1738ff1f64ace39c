"""Who runs on the model next: clicks before encodings and propagation.

Many people share one model, and their work is of two kinds. A click, a box or an undo runs the
prompt encoder and the mask decoder: milliseconds. Encoding an image, tracking a video frame or
finding every mask in a picture runs the image encoder or the memory attention: half a second
to seconds. If every call simply queued for the model in turn, a click would wait behind every
encoding queued before it (a click's p95 was 10 s with eight users uploading).

A :class:`ModelScheduler` hands the model to one call at a time (``slots`` at a time) through
two lanes. Waiting :data:`Lane.INTERACTIVE` work always goes first; :data:`Lane.HEAVY` work goes
in the order it asked. Heavy work does not wait for its whole call to end before a click may
pass: the network calls :func:`~sam2ui.core.modeling.yielding.yield_point` between its blocks,
and there the heavy call hands its slot to the clicks that are waiting and takes it back, ahead
of any heavy work that asked after it, as soon as they are done. A click therefore waits for
at most one block of someone's encoding (tens of milliseconds) plus the clicks before it.

Only one call runs at a time on the default single slot, so a click gets every core the
process uses (torch's intra-op threads) instead of sharing them with the encoding it passed.
A thread that already holds a slot and asks again (nested work) simply keeps it.

A click is more than its model call: the picture and the masks it returns are drawn and
encoded after the call, on the CPU. :meth:`ModelScheduler.interactive` marks such a whole
action; while one runs in another thread, heavy work does not start and stays parked at its
next yield point, so the drawing does not share the cores with an encoding either.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum

from ..modeling.yielding import yield_hook

__all__ = ["Lane", "ModelScheduler", "SchedulerStats"]


class Lane(IntEnum):
    """The kinds of model work; a lower value goes first."""

    INTERACTIVE = 0  # clicks, boxes, undo: the prompt encoder and mask decoder
    HEAVY = 1  # image encodings, tracked frames, automatic masks


@dataclass
class SchedulerStats:
    """Counters since the scheduler was made (for benchmarks and tests)."""

    granted: list[int]  # calls granted a slot, per lane
    passed: int = 0  # times heavy work handed its slot to waiting interactive work


class ModelScheduler:
    """Grants ``slots`` concurrent model calls, interactive work first (see the module doc).

    Args:
        slots: how many model calls may run at once (``>= 1``).
        on_grant: called in the granted thread before its work runs (for example
            :meth:`~sam2ui.core.serving.threads.FreeCpus.apply`, which sets torch's threads
            to the CPUs free now).
    """

    def __init__(self, slots: int = 1, on_grant: Callable[[], object] | None = None) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = int(slots)
        self.on_grant = on_grant
        self._cond = threading.Condition()
        self._free = self.slots
        self._queue: list[tuple[int, int]] = []  # heap of (lane, ticket)
        self._tickets = itertools.count()
        self._waiting = [0] * len(Lane)
        self._held = threading.local()
        self._actions: dict[int, int] = {}  # thread -> interactive actions it began, running
        self.stats = SchedulerStats(granted=[0] * len(Lane))

    def waiting(self, lane: Lane) -> int:
        """How many calls of ``lane`` are waiting for a slot now."""
        return self._waiting[lane]

    @contextmanager
    def interactive(self) -> Iterator[None]:
        """Mark the block as one interactive action: a click's model call together with the
        drawing and encoding of what it returns. While any runs, heavy work of other threads
        waits for a slot, and heavy work running parks at its next yield point; heavy work of
        a thread with an action of its own goes on (a click that must first encode its
        frame). An action that spans threads (a generator) ends for the thread it began in."""
        owner = threading.get_ident()
        with self._cond:
            self._actions[owner] = self._actions.get(owner, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                left = self._actions[owner] - 1
                if left:
                    self._actions[owner] = left
                else:
                    del self._actions[owner]
                self._cond.notify_all()

    def actions(self) -> int:
        """How many interactive actions (:meth:`interactive`) are running now."""
        return sum(self._actions.values())

    def _held_back(self) -> bool:
        """Whether heavy work of this thread must wait for interactive actions: some run, and
        none of them is this thread's (a click's own heavy work goes on; two such clicks
        never wait for each other)."""
        acting = self._actions
        return bool(acting) and threading.get_ident() not in acting

    @contextmanager
    def slot(self, lane: Lane = Lane.INTERACTIVE) -> Iterator[None]:
        """Hold a slot for the block. Heavy work inside it passes its slot to waiting
        interactive work at each yield point of the network."""
        if getattr(self._held, "depth", 0):  # nested: this thread already has a slot
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        key = (int(lane), next(self._tickets))
        self._acquire(key)
        self._held.depth = 1
        self._held.owned = True
        try:
            if self.on_grant is not None:
                self.on_grant()
            if lane == Lane.INTERACTIVE:
                yield
            else:
                with yield_hook(lambda: self._pass_to_interactive(key)):
                    yield
        finally:
            self._held.depth = 0
            if self._held.owned:  # False only when interrupted while passing the slot on
                self._release()

    # ------------------------------------------------------------------ internals
    def _acquire(self, key: tuple[int, int], *, releasing: bool = False) -> None:
        """Wait for a slot under ``key``; ``releasing``: first give back the slot held (in
        the same step, so no later heavy call can slip in ahead of ``key``)."""
        lane = key[0]
        with self._cond:
            if releasing:
                self._free += 1
                self.stats.passed += 1
                self._cond.notify_all()
            heapq.heappush(self._queue, key)
            self._waiting[lane] += 1
            try:
                while not (
                    self._free > 0
                    and self._queue[0] == key
                    and (lane == Lane.INTERACTIVE or not self._held_back())
                ):
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: leave the queue cleanly
                if releasing:
                    self._held.owned = False
                self._queue.remove(key)
                heapq.heapify(self._queue)
                self._waiting[lane] -= 1
                self._cond.notify_all()
                raise
            heapq.heappop(self._queue)
            self._waiting[lane] -= 1
            self._free -= 1
            self.stats.granted[lane] += 1
            if self._free > 0 and self._queue:
                self._cond.notify_all()  # another slot is free: let the next waiter check

    def _release(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    def _pass_to_interactive(self, key: tuple[int, int]) -> None:
        """At a yield point of heavy work: if clicks wait, let them run, then resume. The
        heavy call keeps its ticket, so it resumes before heavy work that asked later."""
        if not (self._waiting[Lane.INTERACTIVE] or self._held_back()):
            return  # the common case: nothing to do, no lock
        self._acquire(key, releasing=True)
