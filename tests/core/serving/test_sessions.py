"""The session manager: ids, locking, memory estimates, eviction and cancellation."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config
from sam2ui.core.serving.sessions import (
    CancellableIterator,
    ServerFull,
    SessionManager,
    SessionNotFound,
    estimate_nbytes,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Closable:
    def __init__(self, nbytes: int = 0) -> None:
        self.data = np.zeros(nbytes, np.uint8)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def data_bytes(state: object) -> int:
    """The estimate of these tests: a Closable's array alone."""
    return int(state.data.nbytes) if isinstance(state, Closable) else 0


def lru_manager(clock: FakeClock, **kwargs: object) -> SessionManager:
    """A manager that may evict any idle session to make room (no active window)."""
    return SessionManager(clock=clock, active_window_s=0, estimate=data_bytes, **kwargs)  # type: ignore[arg-type]


def frames(n: int, log: list[str]) -> Iterator[int]:
    """A stand-in propagation: yields frame indices, logging how it ended."""
    try:
        yield from range(n)
        log.append("finished")
    finally:
        log.append("closed")


def test_ids_are_unguessable_and_errors_name_only_a_prefix() -> None:
    manager = SessionManager()
    ids = {manager.create({"n": i}) for i in range(20)}
    assert len(ids) == 20 and all(len(i) >= 21 for i in ids)
    some = next(iter(ids))
    with manager.use(some) as session:
        assert session.state["n"] in range(20) and session.kind == "dict"
    manager.close(some)
    with pytest.raises(SessionNotFound) as info, manager.use(some):
        pass
    assert isinstance(info.value, KeyError)
    tag = hashlib.sha256(some.encode()).hexdigest()[:8]
    assert str(info.value) == f"no session {tag}… (closed)" and info.value.args == (tag,)
    assert some[:4] not in str(info.value) and some[:4] not in repr(info.value)
    with pytest.raises(KeyError, match="unknown id"):
        manager.cancel("nonexistent-id")
    listing = manager.list_sessions()
    assert len(listing) == 19 and all(len(s.id_prefix) == 8 for s in listing)


def test_estimate_counts_each_storage_once_and_skips_models() -> None:
    t = torch.zeros(100, dtype=torch.float32)  # 400 bytes
    a = np.zeros(50, np.float64)  # 400 bytes
    inner = (t.view(10, 10),)
    again = [t, inner]
    state = {"t": t, "view": t[10:20], "again": again, "a": a, "av": a[::2]}
    # The storages once each, and the containers and keys that hold them.
    containers = sum(map(sys.getsizeof, (state, again, inner, *state)))
    assert estimate_nbytes(state) == 800 + containers

    class Holder:
        __slots__ = ("x",)

        def __init__(self) -> None:
            self.x = torch.ones(3, dtype=torch.int64)

    holder = Holder()
    state2 = {"h": holder, "m": torch.nn.Linear(100, 100), "s": "text"}
    python = sum(map(sys.getsizeof, (state2, holder, "h", "m", "s", "text")))
    assert estimate_nbytes(state2) == 24 + python  # the model's 40 KB of weights are not
    with torch.inference_mode():
        one = [torch.ones(4)]
        assert estimate_nbytes(one) == 16 + sys.getsizeof(one)
    # Packed masks are bytes: counted at their size.
    packed = bytes(1000)
    assert estimate_nbytes([packed]) == sys.getsizeof([packed]) + sys.getsizeof(packed) > 1000


def test_image_predictor_session_counts_its_embedding_not_the_model() -> None:
    torch.manual_seed(0)
    model = build_sam2(replace(get_config("sam2.1-hiera-tiny"), image_size=256))
    manager = SessionManager()
    sid = manager.create(SAM2ImagePredictor(model), kind="image")
    assert manager.list_sessions()[0].memory_bytes < 1000  # no image: a few Python objects
    with manager.use(sid) as session:
        session.state.set_image(np.zeros((40, 60, 3), np.uint8))
    info = manager.list_sessions()[0]
    assert info.kind == "image" and not info.busy
    # The 256-channel 16x16 embedding alone is 256 KiB; the model (~150 MB) is not counted.
    assert 256 * 16 * 16 * 4 <= info.memory_bytes < 10_000_000


def test_different_sessions_run_concurrently() -> None:
    manager = SessionManager()
    a, b = manager.create(1), manager.create(2)
    barrier = threading.Barrier(2, timeout=5)
    errors: list[BaseException] = []

    def work(sid: str) -> None:
        try:
            with manager.use(sid):
                barrier.wait()  # both must be inside their use blocks at once
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_one_session_is_serialised() -> None:
    manager = SessionManager()
    sid = manager.create([])
    events: list[str] = []

    def work(name: str) -> None:
        with manager.use(sid) as session:
            events.append(f"{name}+")
            session.state.append(name)
            time.sleep(0.02)
            events.append(f"{name}-")

    threads = [threading.Thread(target=work, args=(n,)) for n in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(events) == 8
    assert all(events[i][0] == events[i + 1][0] for i in range(0, 8, 2))
    assert [e[1] for e in events] == ["+", "-"] * 4
    with manager.use(sid) as session:
        assert sorted(session.state) == list("abcd")


def test_lru_eviction_under_budget_and_busy_sessions_are_kept() -> None:
    clock = FakeClock()
    manager = lru_manager(clock, memory_budget=300)
    states = [Closable(100) for _ in range(5)]
    ids = []
    for state in states[:3]:
        ids.append(manager.create(state))
        clock.now += 1
    assert manager.total_memory() == 300
    with manager.use(ids[0]):  # 0 is now the most recently used; 1 is the LRU
        clock.now += 1
    clock.now += 1
    ids.append(manager.create(states[3]))
    assert ids[1] not in manager and states[1].closed and states[1].data is not None
    assert [ids[0] in manager, ids[2] in manager, ids[3] in manager] == [True] * 3
    with pytest.raises(SessionNotFound, match="evicted to make room after"), manager.use(ids[1]):
        pass
    # Session 2 is now the LRU, but it is busy: session 0 goes instead.
    with manager.use(ids[2]):
        clock.now += 1
        ids.append(manager.create(states[4]))
        assert ids[2] in manager and ids[0] not in manager and states[0].closed
        assert manager.list_sessions()[0].busy is True
    assert manager.total_memory() == 300 and len(manager) == 3


def test_growth_inside_use_triggers_eviction_and_oversized_session_is_kept() -> None:
    clock = FakeClock()
    manager = lru_manager(clock, memory_budget=1000)
    small = manager.create(Closable(100))
    clock.now += 1
    big = manager.create(Closable(0))
    with manager.use(big) as session:
        session.state.data = np.zeros(2000, np.uint8)
    assert small not in manager and big in manager
    assert manager.list_sessions()[0].memory_bytes == 2000


def test_max_sessions() -> None:
    clock = FakeClock()
    manager = lru_manager(clock, max_sessions=2)
    first = manager.create("a")
    clock.now += 1
    manager.create("b")
    clock.now += 1
    manager.create("c")
    assert len(manager) == 2 and first not in manager


def test_cancel_mid_iteration_keeps_results_and_session_works() -> None:
    manager = SessionManager()
    sid = manager.create({"runs": 0})
    log: list[str] = []
    results = []
    for frame in manager.run_cancellable(sid, frames(10, log)):
        results.append(frame)
        if len(results) == 3:
            manager.cancel(sid)
    assert results == [0, 1, 2] and log == ["closed"]
    assert manager.list_sessions()[0].busy is False
    with manager.use(sid) as session:
        session.state["runs"] += 1
    # A fresh run is not affected by the earlier cancel; work may be a function of the state.
    log2: list[str] = []
    again = list(manager.run_cancellable(sid, lambda state: frames(state["runs"] + 9, log2)))
    assert again == list(range(10)) and log2 == ["finished", "closed"]


def test_closing_a_session_stops_its_running_work_at_the_next_item() -> None:
    """A user who leaves mid-propagation: the close cancels the run instead of waiting for
    all its frames."""
    manager = SessionManager()
    sid = manager.create(None)
    log: list[str] = []
    got_two, closing = threading.Event(), threading.Event()
    results: list[int] = []

    def consume() -> None:
        for frame in manager.run_cancellable(sid, frames(1000, log)):
            results.append(frame)
            if len(results) == 2:
                got_two.set()
                closing.wait(5)

    thread = threading.Thread(target=consume)
    thread.start()
    assert got_two.wait(5)
    closer = threading.Thread(target=manager.close, args=(sid,))
    closer.start()
    for _ in range(500):  # until the close has ended the session (it then waits for the run)
        if sid not in manager:
            break
        closer.join(0.01)
    closing.set()
    thread.join(5)
    closer.join(5)
    assert not thread.is_alive() and not closer.is_alive()
    assert results == [0, 1] and log == ["closed"] and sid not in manager


def test_cancel_from_another_thread() -> None:
    manager = SessionManager()
    sid = manager.create(None)
    got_three, cancelled = threading.Event(), threading.Event()
    results: list[int] = []

    def consume() -> None:
        for frame in manager.run_cancellable(sid, frames(10, [])):
            results.append(frame)
            if len(results) == 3:
                got_three.set()
                cancelled.wait(5)

    thread = threading.Thread(target=consume)
    thread.start()
    assert got_three.wait(5)
    assert manager.list_sessions()[0].busy is True
    manager.cancel(sid)
    cancelled.set()
    thread.join(5)
    assert results == [0, 1, 2]


def test_cancellable_iterator_on_plain_iterable() -> None:
    event = threading.Event()
    it = CancellableIterator([1, 2, 3], event)
    assert next(it) == 1
    event.set()
    assert list(it) == [] and it.cancelled


def test_idle_eviction_with_fake_clock() -> None:
    clock = FakeClock()
    manager = SessionManager(clock=clock)
    old, busy, fresh = Closable(), Closable(), Closable()
    old_id, busy_id = manager.create(old), manager.create(busy)
    clock.now += 50
    fresh_id = manager.create(fresh)
    clock.now += 20
    with manager.use(busy_id):
        clock.now += 20  # old: idle 90 s; fresh: 40 s; busy: in use
        assert manager.evict_idle(60) == 1
    assert old.closed and not busy.closed and not fresh.closed
    assert old_id not in manager and busy_id in manager and fresh_id in manager
    expired = r"expired after 1\.5 minutes idle"
    with pytest.raises(SessionNotFound, match=expired) as info, manager.use(old_id):
        pass
    assert info.value.ended is not None and info.value.ended.cause == "expired"
    assert info.value.ended.idle_s == 90
    clock.now += 61
    assert manager.evict_idle(60) == 2 and len(manager) == 0 and busy.closed


def test_close_waits_for_user_and_clear() -> None:
    manager = SessionManager()
    state = Closable(10)
    sid = manager.create(state)
    inside, closed = threading.Event(), threading.Event()

    def closer() -> None:
        inside.wait(5)
        manager.close(sid)
        closed.set()

    thread = threading.Thread(target=closer)
    thread.start()
    with manager.use(sid):
        inside.set()
        assert not closed.wait(0.05)  # close waits for this block
        assert not state.closed
    thread.join(5)
    assert closed.is_set() and state.closed and sid not in manager
    others = [Closable() for _ in range(3)]
    for other in others:
        manager.create(other)
    manager.clear()
    assert len(manager) == 0 and all(o.closed for o in others)


def test_full_server_refuses_a_newcomer_instead_of_evicting_active_people() -> None:
    clock = FakeClock()
    manager = SessionManager(max_sessions=2, active_window_s=300, clock=clock, estimate=data_bytes)
    first, second = Closable(), Closable()
    first_id, second_id = manager.create(first), manager.create(second)
    clock.now += 120  # both used 2 minutes ago: between two clicks
    newcomer = Closable()
    with pytest.raises(ServerFull) as info:
        manager.create(newcomer)
    full = info.value
    assert full.what == "sessions" and full.live == 2
    assert full.retry_after_s == 180 and full.retry_minutes == 3
    assert (
        str(full) == "the server is full: 2 people hold every session slot; try again in 3 minutes"
    )
    assert first_id in manager and second_id in manager and not first.closed
    assert not newcomer.closed and len(manager) == 2  # the refused state stays the caller's
    with pytest.raises(ServerFull):
        manager.admit()
    # Past the active window the least recently used idle session makes room.
    with manager.use(second_id):
        clock.now += 200
    third_id = manager.create(newcomer)
    assert first_id not in manager and first.closed and third_id in manager
    with pytest.raises(SessionNotFound) as gone:
        manager.close(first_id)
    assert gone.value.ended is not None and gone.value.ended.cause == "evicted"
    assert gone.value.ended.idle_s == 320
    assert str(gone.value).endswith("(evicted to make room after 5.3 minutes idle)")


def test_memory_budget_admission_and_a_session_in_use_is_never_evicted() -> None:
    clock = FakeClock()
    manager = SessionManager(
        memory_budget=250, active_window_s=60, clock=clock, estimate=data_bytes
    )
    old_id = manager.create(Closable(100))
    busy_id = manager.create(Closable(100))
    clock.now += 30
    with pytest.raises(ServerFull) as info:
        manager.create(Closable(100))
    assert info.value.what == "memory" and info.value.retry_after_s == 30
    manager.admit(50)  # a small one fits
    with manager.use(busy_id):
        clock.now += 100  # both are past the window now, but busy_id is in use
        manager.admit(100)  # room made by evicting the idle one only
        assert old_id not in manager and busy_id in manager
        manager.create(Closable(100))
        with pytest.raises(ServerFull) as again:
            manager.create(Closable(100))
    assert again.value.live == 2
    # A session alone on the server is admitted whatever its size.
    alone = SessionManager(memory_budget=10, estimate=data_bytes)
    alone.create(Closable(1000))
    assert len(alone) == 1


def test_growth_past_the_budget_keeps_active_sessions() -> None:
    clock = FakeClock()
    manager = SessionManager(
        memory_budget=1000, active_window_s=60, clock=clock, estimate=data_bytes
    )
    small = manager.create(Closable(100))
    clock.now += 10
    big = manager.create(Closable(0))
    with manager.use(big) as session:
        session.state.data = np.zeros(2000, np.uint8)
    assert small in manager and manager.total_memory() == 2100  # over, but nobody is evicted
    with pytest.raises(ServerFull):
        manager.admit()
    clock.now += 61
    with manager.use(big):
        pass
    assert small not in manager and manager.total_memory() == 2000


def test_closed_and_unknown_sessions_say_so() -> None:
    manager = SessionManager()
    sid = manager.create(Closable())
    manager.close(sid)
    assert manager.ended(sid) is not None and manager.ended(sid).cause == "closed"  # type: ignore[union-attr]
    with pytest.raises(SessionNotFound) as info, manager.use("never-was"):
        pass
    tag = hashlib.sha256(b"never-was").hexdigest()[:8]
    assert info.value.ended is None and str(info.value) == f"no session {tag}… (unknown id)"
    with pytest.raises(ValueError, match="active_window_s"):
        SessionManager(active_window_s=-1)
