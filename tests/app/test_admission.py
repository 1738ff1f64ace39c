"""Limits of a shared server: admission when full, why a session ended, prompt and object
caps, and the options that set them."""

from __future__ import annotations

import argparse

import pytest

from sam2ui.app.context import AppContext, UserError
from sam2ui.app.image_handlers import ImageHandlers
from sam2ui.app.options import (
    DEFAULT_MAX_OBJECTS,
    DEFAULT_MAX_PROMPTS,
    MAX_SESSIONS_ENV,
    MEMORY_BUDGET_ENV,
    AppConfig,
    add_app_arguments,
    config_from_args,
)
from sam2ui.core import LimitReached, ModelCache, SessionManager
from sam2ui.core.annotate import objects
from tests.app.conftest import make_image


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_server_refuses_newcomers_and_keeps_everyone_working(
    app_config: AppConfig, small_cache: ModelCache
) -> None:
    clock = FakeClock()
    sessions = SessionManager(max_sessions=2, active_window_s=300, clock=clock)
    ctx = AppContext(app_config, cache=small_cache, sessions=sessions)
    h = ImageHandlers(ctx)
    try:
        a, _ = h.upload(None, make_image(), owner="a")
        b, _ = h.upload(None, make_image(), owner="b")
        clock.now += 60
        for _ in range(3):  # three fresh visitors while a and b are between two clicks
            with pytest.raises(UserError) as info:
                h.upload(None, make_image(), owner="new")
            assert str(info.value) == (
                "The server is busy: it is serving as many people as it can right now. "
                "Please try again in 4 minutes."
            )
        assert len(ctx.sessions) == 2
        assert h.click(a, None, 40, 48).objects[0].obj_id == 1
        assert h.click(b, None, 40, 48).objects[0].obj_id == 1
        # A re-upload in a live tab reuses its session: never refused.
        assert h.upload(a, make_image())[0] == a
        # Once b has been idle past the active window, it makes room, and b is told why.
        clock.now += 301
        h.click(a, None, 40, 48)
        c, _ = h.upload(None, make_image(), owner="c")
        assert c in ctx.sessions and b not in ctx.sessions and a in ctx.sessions
        evicted = (
            "This session was closed to make room for others, after 5 minutes without "
            "use. Upload an image again."
        )
        with pytest.raises(UserError) as gone:
            h.click(b, None, 40, 48)
        assert str(gone.value) == evicted
        # Idle sessions expire by the timeout, and say so.
        clock.now += 1800
        assert ctx.sessions.evict_idle(1799) == 2
        with pytest.raises(UserError, match=r"^This session expired after 30 minutes without"):
            h.show(c)
    finally:
        ctx.close()


def test_the_memory_budget_admits_by_size(app_config: AppConfig, small_cache: ModelCache) -> None:
    clock = FakeClock()
    sessions = SessionManager(memory_budget=1, active_window_s=300, clock=clock)
    ctx = AppContext(app_config, cache=small_cache, sessions=sessions)
    h = ImageHandlers(ctx)
    try:
        h.upload(None, make_image())  # alone: admitted though over the budget
        assert ctx.sessions.total_memory() > 100_000  # the embedding is counted
        with pytest.raises(UserError, match="The server is busy"):
            h.upload(None, make_image())
        assert ctx.sessions.list_sessions()[0].memory_bytes > 100_000
    finally:
        ctx.close()


def test_prompt_and_object_caps(app_config: AppConfig, small_cache: ModelCache) -> None:
    config = AppConfig(**{**app_config.__dict__, "max_prompts": 2, "max_objects": 2})
    ctx = AppContext(config, cache=small_cache)
    h = ImageHandlers(ctx)
    try:
        sid, _ = h.upload(None, make_image())
        h.click(sid, None, 40, 48)
        h.box(sid, None, 30, 30, 60, 60)
        with pytest.raises(LimitReached) as info:
            h.click(sid, None, 10, 10)
        assert str(info.value) == (
            "Object 1 has 2 prompts, the most allowed here; undo or remove some before adding more."
        )
        h.box(sid, None, 20, 20, 70, 70)  # replacing the box adds no prompt
        h.undo(sid)  # the new box goes back
        h.add_object(sid)
        with pytest.raises(LimitReached, match="^There are 2 objects, the most allowed here"):
            h.add_object(sid)
        with ctx.use(sid, "image") as work:
            assert len(work.annotator.objects) == 2
            assert len(work.annotator.objects[1].prompts) == 2
    finally:
        ctx.close()


def _parse(argv: list[str]) -> AppConfig:
    parser = argparse.ArgumentParser()
    add_app_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_limits_from_the_command_line_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    monkeypatch.delenv(MAX_SESSIONS_ENV, raising=False)
    config = _parse([])
    assert config.memory_budget_mb == 6144 and config.max_sessions == 64
    assert (config.max_prompts, config.max_objects, config.active_window_s) == (200, 255, 300)
    # The app's defaults are the annotators'.
    assert (DEFAULT_MAX_PROMPTS, DEFAULT_MAX_OBJECTS) == (
        objects.DEFAULT_MAX_PROMPTS,
        objects.DEFAULT_MAX_OBJECTS,
    )
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "2048")
    monkeypatch.setenv(MAX_SESSIONS_ENV, "8")
    config = _parse([])
    assert config.memory_budget_mb == 2048 and config.max_sessions == 8
    config = _parse(
        [
            *("--memory-budget-mb", "0", "--max-sessions", "3", "--active-window", "60"),
            *("--max-prompts", "50", "--max-objects", "20"),
        ]
    )
    assert config.memory_budget_mb is None and config.max_sessions == 3
    assert (config.max_prompts, config.max_objects, config.active_window_s) == (50, 20, 60)
    ctx = AppContext(config, cache=ModelCache(lambda key: None))  # type: ignore[arg-type,return-value]
    assert ctx.sessions.memory_budget is None and ctx.sessions.max_sessions == 3
    assert ctx.sessions.active_window_s == 60
    ctx.close()
    budgeted = AppContext(_parse(["--memory-budget-mb", "1.5"]), cache=ModelCache(lambda k: None))  # type: ignore[arg-type,return-value]
    assert budgeted.sessions.memory_budget == 1_572_864
    budgeted.close()
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=f"environment variable {MEMORY_BUDGET_ENV}"):
        _parse([])
    with pytest.raises(ValueError, match="max_prompts must be >= 1"):
        AppConfig(max_prompts=0)
