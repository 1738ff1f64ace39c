"""The model scheduler: interactive work first, heavy work lets it pass at yield points."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config
from sam2ui.core.modeling.yielding import yield_hook, yield_point
from sam2ui.core.serving.lanes import Lane, ModelScheduler

WAIT_S = 30.0  # generous deadlines: only a hang fails them


def _until(predicate, what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.005)):
        if predicate():
            return
        done.wait(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _worker(sched: ModelScheduler, lane: Lane, name: str, order: list[str], body=None):
    def run() -> None:
        with sched.slot(lane):
            order.append(name)
            if body is not None:
                body()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_waiting_interactive_work_goes_before_heavy_work_that_asked_first() -> None:
    sched = ModelScheduler()
    order: list[str] = []
    release = threading.Event()
    holder = _worker(sched, Lane.HEAVY, "holder", order, lambda: release.wait(WAIT_S))
    _until(lambda: order == ["holder"], "the first call")
    heavy = [_worker(sched, Lane.HEAVY, f"heavy{i}", order) for i in range(2)]
    _until(lambda: sched.waiting(Lane.HEAVY) == 2, "heavy waiters")
    click = _worker(sched, Lane.INTERACTIVE, "click", order)
    _until(lambda: sched.waiting(Lane.INTERACTIVE) == 1, "the click to wait")
    release.set()
    for t in [holder, *heavy, click]:
        t.join(WAIT_S)
    # The click passes both encodings; heavy work keeps the order it asked in.
    assert order == ["holder", "click", "heavy0", "heavy1"]
    assert sched.stats.granted == [1, 3]


def test_heavy_work_hands_its_slot_to_clicks_at_yield_points() -> None:
    sched = ModelScheduler()
    order: list[str] = []
    at_block = threading.Event()
    go_on = threading.Event()

    def encoding() -> None:
        order.append("block 1")
        at_block.set()
        go_on.wait(WAIT_S)  # a click arrives while the first block runs
        yield_point()
        order.append("block 2")
        yield_point()  # nobody waits now: nothing happens
        order.append("block 3")

    heavy = _worker(sched, Lane.HEAVY, "encode", order, encoding)
    at_block.wait(WAIT_S)
    later_heavy = _worker(sched, Lane.HEAVY, "other encode", order)
    click = _worker(sched, Lane.INTERACTIVE, "click", order)
    _until(lambda: sched.waiting(Lane.INTERACTIVE) == 1, "the click to wait")
    _until(lambda: sched.waiting(Lane.HEAVY) == 1, "the other encoding to wait")
    go_on.set()
    for t in (heavy, later_heavy, click):
        t.join(WAIT_S)
    # The click ran between two blocks; the interrupted encoding then resumed before the
    # encoding that asked after it.
    assert order == ["encode", "block 1", "click", "block 2", "block 3", "other encode"]
    assert sched.stats.passed == 1


def test_heavy_work_stays_parked_while_a_click_draws_its_result() -> None:
    sched = ModelScheduler()
    order: list[str] = []
    at_block = threading.Event()
    go_on = threading.Event()
    drawn = threading.Event()

    def encoding() -> None:
        order.append("block 1")
        at_block.set()
        go_on.wait(WAIT_S)
        yield_point()  # a click's action runs: park until it ends, drawing included
        order.append("block 2")

    def click() -> None:
        with sched.interactive():
            with sched.slot(Lane.INTERACTIVE):
                order.append("click")
            # The encoding took its slot back in the queue, but waits while the click draws.
            _until(lambda: sched.waiting(Lane.HEAVY) == 1, "the encoding to park")
            order.append("draw")
            drawn.set()

    heavy = _worker(sched, Lane.HEAVY, "encode", order, encoding)
    at_block.wait(WAIT_S)
    clicker = threading.Thread(target=click, daemon=True)
    clicker.start()
    _until(lambda: sched.actions() == 1 and sched.waiting(Lane.INTERACTIVE) == 1, "the click")
    go_on.set()
    for t in (heavy, clicker):
        t.join(WAIT_S)
    assert drawn.is_set()
    assert order == ["encode", "block 1", "click", "draw", "block 2"]
    assert sched.actions() == 0

    # Heavy work does not start while another thread's action runs ...
    order.clear()
    started = threading.Event()
    end = threading.Event()

    def long_click() -> None:
        with sched.interactive():
            started.set()
            end.wait(WAIT_S)
            order.append("click done")

    clicker = threading.Thread(target=long_click, daemon=True)
    clicker.start()
    started.wait(WAIT_S)
    heavy = _worker(sched, Lane.HEAVY, "encode", order)
    _until(lambda: sched.waiting(Lane.HEAVY) == 1, "the encoding to wait")
    assert order == []
    end.set()
    for t in (clicker, heavy):
        t.join(WAIT_S)
    assert order == ["click done", "encode"]


def test_a_click_runs_its_own_heavy_work_and_two_such_clicks_do_not_wait_for_each_other() -> None:
    sched = ModelScheduler()
    both_acting = threading.Barrier(2, timeout=WAIT_S)
    order: list[str] = []

    def click_on_a_new_frame(name: str) -> None:
        with sched.interactive(), sched.interactive():  # nested: one action per thread
            both_acting.wait()
            with sched.slot(Lane.HEAVY):  # the frame's encoding
                yield_point()
                order.append(name)

    threads = [
        threading.Thread(target=click_on_a_new_frame, args=(f"c{i}",), daemon=True)
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert sorted(order) == ["c0", "c1"]
    assert sched.actions() == 0 and sched._free == 1


def test_nested_slots_and_yield_points_outside_a_slot() -> None:
    sched = ModelScheduler()
    yield_point()  # no hook: nothing happens
    calls: list[int] = []
    with yield_hook(lambda: calls.append(1)):
        yield_point()
    assert calls == [1]
    with sched.slot(Lane.HEAVY), sched.slot(Lane.INTERACTIVE):  # nested: no deadlock
        assert sched._free == 0
    assert sched._free == 1
    with pytest.raises(ValueError, match="slots must be >= 1"):
        ModelScheduler(0)


def test_two_slots_run_two_calls_at_once() -> None:
    sched = ModelScheduler(slots=2)
    inside = threading.Barrier(2, timeout=WAIT_S)
    order: list[str] = []
    threads = [_worker(sched, Lane.HEAVY, f"w{i}", order, inside.wait) for i in range(2)]
    for t in threads:
        t.join(WAIT_S)
    assert sorted(order) == ["w0", "w1"] and sched._free == 2


def test_a_click_passes_a_real_image_encoding() -> None:
    """The network's own yield points let a click in while another image is encoded, and
    neither result changes."""
    from sam2ui.core.image.predictor import SAM2ImagePredictor

    torch.manual_seed(0)
    tiny_model = build_sam2(replace(get_config("sam2.1-hiera-tiny"), image_size=256))
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)
    second = rng.integers(0, 255, (240, 200, 3), dtype=np.uint8)
    clicker, encoder = SAM2ImagePredictor(tiny_model), SAM2ImagePredictor(tiny_model)
    clicker.set_image(first)
    point = np.array([[100.0, 120.0]])
    alone, _, _ = clicker.predict(point_coords=point, point_labels=np.array([1]))

    sched = ModelScheduler()
    order: list[str] = []
    started = threading.Event()

    def encode() -> None:
        started.set()
        _until(lambda: sched.waiting(Lane.INTERACTIVE) == 1, "the click to wait")
        encoder.set_image(second)
        order.append("encoded")

    heavy = _worker(sched, Lane.HEAVY, "encoding", order, encode)
    started.wait(WAIT_S)
    got: list[np.ndarray] = []

    def click() -> None:
        masks, _, _ = clicker.predict(point_coords=point, point_labels=np.array([1]))
        got.append(masks)
        order.append("clicked")

    click_thread = _worker(sched, Lane.INTERACTIVE, "click", order, click)
    heavy.join(WAIT_S)
    click_thread.join(WAIT_S)
    assert order.index("clicked") < order.index("encoded")
    assert sched.stats.passed >= 1
    np.testing.assert_array_equal(got[0], alone)
    reference = SAM2ImagePredictor(tiny_model)
    reference.set_image(second)
    torch.testing.assert_close(encoder.features.image_embed, reference.features.image_embed)
