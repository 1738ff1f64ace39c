"""The app on ZeroGPU, with a stand-in ``spaces`` that forks a process for every GPU call.

The model is poisoned in the test process: any module run there raises. So every model call
must go to a worker, and every result (masks, the changed annotator) must come back by
pickling, as on a real ZeroGPU Space. The same actions without ZeroGPU give the reference.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sam2ui.app import zerogpu
from sam2ui.app.context import AppContext, UserError
from sam2ui.app.image_handlers import ImageHandlers, ImageView
from sam2ui.app.options import AppConfig
from sam2ui.app.video_handlers import VideoHandlers, VideoView
from sam2ui.core import ModelCache

from .conftest import make_image, record_video_opens

FAKE_SPACES = Path(__file__).parent / "fake_spaces"
# ZeroGPU (and its stand-in here) forks a worker per call; where Python cannot fork (Windows)
# the app runs calls in-process instead, as tests/app/test_platforms.py checks.
pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork, as ZeroGPU does"
)


class ZeroGPU:
    """Switches the ZeroGPU mode (stand-in ``spaces``, poisoned model) on and off."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.syspath_prepend(str(FAKE_SPACES))
        sys.modules.pop("spaces", None)
        import spaces

        self.spaces = spaces
        self._hook: Any = None

    def on(self) -> None:
        os.environ["SPACES_ZERO_GPU"] = "true"
        zerogpu._gpu_tasks.cache_clear()
        main = os.getpid()

        def refuse(module: torch.nn.Module, args: Any) -> None:
            if os.getpid() == main:
                raise AssertionError(f"{type(module).__name__} ran outside a GPU call")

        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(refuse)
        self.spaces.calls.update(function=0, generator=0)
        assert zerogpu.on_zero_gpu()

    def off(self) -> None:
        os.environ.pop("SPACES_ZERO_GPU", None)
        zerogpu._gpu_tasks.cache_clear()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    @property
    def calls(self) -> dict[str, int]:
        return dict(self.spaces.calls)


@pytest.fixture
def zero_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[ZeroGPU]:
    mode = ZeroGPU(monkeypatch)
    mode.on()
    try:
        yield mode
    finally:
        mode.off()
        sys.modules.pop("spaces", None)


def _run_app(cache: ModelCache, actions: Callable[[AppContext], Any]) -> Any:
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", max_video_seconds=5)
    ctx = AppContext(config, cache=cache)
    try:
        assert ctx.load_model()  # as on ZeroGPU: before any worker is forked
        return actions(ctx)
    finally:
        ctx.close()


def _image_actions(ctx: AppContext) -> tuple[list[ImageView], dict[int, np.ndarray], int]:
    h = ImageHandlers(ctx)
    sid, first = h.upload(None, make_image())
    views = [
        first,
        h.click(sid, None, 40, 48),
        h.click(sid, None, 90, 20, positive=False),
        h.box(sid, h.add_object(sid).selected, 60, 20, 120, 90),
        h.undo(sid, 1),
        h.choose_candidate(sid, 1, 2),
    ]
    with ctx.use(sid, "image") as work:
        masks = work.annotator.masks
    found = h.segment_everything(sid, 4)
    assert found.message.startswith("Found")
    assert all(path.stat().st_size > 0 for path in h.export(sid))
    return views, masks, len(found.objects)


def test_image_tab_runs_the_model_in_workers_only(
    zero_gpu: ZeroGPU, small_cache: ModelCache
) -> None:
    views, masks, objects = _run_app(small_cache, _image_actions)
    # Upload, two clicks, the box, undo and segment everything: one GPU call each.
    assert zero_gpu.calls == {"function": 6, "generator": 0}
    zero_gpu.off()
    local_views, local_masks, local_objects = _run_app(small_cache, _image_actions)
    assert sorted(masks) == sorted(local_masks) == [1, 2]
    for obj_id, mask in local_masks.items():
        assert mask.any() and np.array_equal(masks[obj_id], mask)
    for remote, local in zip(views, local_views, strict=True):
        assert np.array_equal(remote.overlay, local.overlay)
        assert [r.detail for r in remote.objects] == [r.detail for r in local.objects]
        assert [c[1] for c in remote.candidates] == [c[1] for c in local.candidates]
    assert objects == local_objects


def test_the_poison_catches_model_work_in_this_process(
    zero_gpu: ZeroGPU, small_cache: ModelCache
) -> None:
    os.environ.pop("SPACES_ZERO_GPU")  # the app believes it is not on ZeroGPU: runs here
    with pytest.raises(AssertionError, match="ran outside a GPU call"):
        _run_app(small_cache, lambda ctx: ImageHandlers(ctx).upload(None, make_image()))


def _video_actions(video_file: Path) -> Callable[[AppContext], Any]:
    def actions(ctx: AppContext) -> tuple[list[VideoView], dict[int, Any], list[int], str]:
        h = VideoHandlers(ctx)
        sid, _ = h.upload(None, video_file)
        h.click(sid, 1, None, 40, 48)
        views = list(h.propagate(sid, "both"))
        views.append(h.click(sid, 4, None, 70, 50, positive=False))  # a correction
        views += list(h.propagate(sid, "forward"))
        with ctx.use(sid, "video") as work:
            results = work.annotator.results()

        def stop_at_two(done: int, total: int) -> None:
            if done == 2:
                h.cancel(sid)

        h.click(sid, 0, h.add_object(sid).selected, 30, 40)
        stopped = list(h.propagate(sid, "forward", stop_at_two))[-1].message
        with ctx.use(sid, "video") as work:
            tracked = work.annotator.tracked_frames
        assert list(h.propagate(sid, "forward"))[-1].message.startswith("Tracked 6 frames")
        assert all(path.stat().st_size > 0 for path in h.export(sid))
        return views, results, tracked, stopped

    return actions


def test_video_tab_runs_the_model_in_workers_only(
    zero_gpu: ZeroGPU, small_cache: ModelCache, video_file: Path
) -> None:
    views, results, tracked, stopped = _run_app(small_cache, _video_actions(video_file))
    # Upload and three clicks are GPU calls; each propagation is one generator call.
    assert zero_gpu.calls == {"function": 4, "generator": 4}
    assert stopped == "Stopped after 2 of 6 frames; the tracked frames are kept."
    assert tracked == list(range(6))  # object 1's frames stay; object 2 reached frames 0, 1
    zero_gpu.off()
    local_views, local_results, local_tracked, local_stopped = _run_app(
        small_cache, _video_actions(video_file)
    )
    assert (tracked, stopped) == (local_tracked, local_stopped)
    assert sorted(results) == sorted(local_results) == list(range(6))
    for frame, masks in local_results.items():
        assert sorted(results[frame]) == sorted(masks) == [1]
        assert np.array_equal(results[frame][1], masks[1])
    assert any(m[1].any() for m in local_results.values())

    # The same final views (previews depend on timing), the correction included; previews
    # show the frame they name as tracked so far.
    def finals(found: list[VideoView]) -> list[VideoView]:
        return [v for v in found if v.progress is None or v.video is not None]

    assert [v.message for v in finals(views)] == [v.message for v in finals(local_views)]
    for remote, local in zip(finals(views), finals(local_views), strict=True):
        assert remote.frame_idx == local.frame_idx
        assert np.array_equal(remote.frame, local.frame)
    shown = {id(v) for v in finals(views)}
    previews = [v for v in views if id(v) not in shown]
    assert previews and all(v.message.startswith("Tracking: ") for v in previews)


def test_a_video_upload_is_opened_once_with_a_worker(
    zero_gpu: ZeroGPU,
    small_cache: ModelCache,
    video_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened = record_video_opens(monkeypatch, tmp_path / "opened.txt")

    def upload(ctx: AppContext) -> int:
        return VideoHandlers(ctx).upload(None, video_file)[1].num_frames

    assert _run_app(small_cache, upload) == 6
    # Opened here for the limits; the worker gets it pickled (reopened, not read through).
    assert opened() == [str(video_file)]
    assert zero_gpu.calls == {"function": 1, "generator": 0}


def test_errors_from_a_worker_keep_their_message(zero_gpu: ZeroGPU) -> None:
    with pytest.raises(ValueError, match="invalid literal for int"):
        zerogpu.run(int, "seven")
    with pytest.raises(UserError, match="no prompt"):
        zerogpu.run(_raise_user_error, "no prompt")
    assert zero_gpu.calls["function"] == 2


def _raise_user_error(message: str) -> None:
    raise UserError(message)
