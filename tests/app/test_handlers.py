"""The app's handlers as plain functions, on a small random-weight model."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sam2ui.app.context import AppContext, UserError
from sam2ui.app.image_handlers import ImageHandlers
from sam2ui.app.options import AppConfig
from sam2ui.app.video_handlers import VideoHandlers
from sam2ui.core import CheckpointUnavailableError, ModelCache
from tests.app.conftest import HEIGHT, WIDTH, make_image, record_video_opens, write_video


def _changed(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.any(a != b, axis=-1).sum())


def test_click_segments_and_lists_the_object(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    image = make_image()
    sid, view = h.upload(None, image)
    assert view.objects == [] and view.selected is None
    np.testing.assert_array_equal(view.overlay, image)  # nothing drawn yet

    view = h.click(sid, None, 40, 48)
    assert [(r.obj_id, r.name) for r in view.objects] == [(1, "object 1")]
    assert view.selected == 1
    with ctx.use(sid, "image") as work:
        obj = work.annotator.objects[1]
        mask = obj.mask
        scores = [c.score for c in obj.candidates]
    assert mask is not None and mask.any()
    assert _changed(view.overlay, image) >= int(mask.sum())  # every mask pixel is tinted
    # One click: three candidates, captioned with their scores, the shown one marked.
    assert len(view.candidates) == 3
    assert [float(cap.split(": ")[1].split()[0]) for _, cap in view.candidates] == pytest.approx(
        scores, abs=1e-3
    )
    assert sum("(shown)" in cap for _, cap in view.candidates) == 1

    before = view.overlay
    view = h.click(sid, None, 5, 5, positive=False)
    assert _changed(view.overlay, before) > 0
    with ctx.use(sid, "image") as work:
        assert [c.positive for c in work.annotator.objects[1].clicks] == [True, False]


def test_box_undo_and_clear(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    h.box(sid, None, 70, 75, 30, 20)
    with ctx.use(sid, "image") as work:
        assert work.annotator.objects[1].box == (30, 20, 70, 75)
        assert work.annotator.objects[1].mask is not None
    h.click(sid, None, 50, 50, positive=False)
    h.undo(sid)
    with ctx.use(sid, "image") as work:
        assert work.annotator.objects[1].clicks == []
        assert work.annotator.objects[1].box is not None
    view = h.clear_object(sid)
    assert view.objects[0].detail == "no mask yet"
    assert h.undo(sid).objects[0].detail == "no mask yet"  # nothing left to undo: no error


def test_a_click_draws_its_view_inside_one_interactive_action(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Others' heavy work stays parked until the click's picture is drawn, not only during
    its model call (see ModelScheduler.interactive); an upload is no such action."""
    from sam2ui.core import ImageAnnotator

    seen: list[int] = []
    render = ImageAnnotator.render

    def watched(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(ctx.scheduler.actions())
        return render(self, *args, **kwargs)

    monkeypatch.setattr(ImageAnnotator, "render", watched)
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    h.click(sid, None, 40, 48)
    h.box(sid, None, 30, 20, 70, 75)
    h.undo(sid)
    assert seen == [0, 1, 1, 1]
    assert ctx.scheduler.actions() == 0
    with pytest.raises(UserError):
        h.click(sid, 99, 40, 48)  # no object 99: the action still ends
    assert ctx.scheduler.actions() == 0


def test_object_list_add_select_rename_remove(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    h.click(sid, None, 40, 48)
    view = h.add_object(sid, "sky")
    assert [r.label for r in view.objects] == ["1: object 1", "2: sky"] and view.selected == 2
    h.click(sid, None, 100, 10)
    with ctx.use(sid, "image") as work:
        colors = {i: o.color for i, o in work.annotator.objects.items()}
    assert colors[1] != colors[2]
    assert h.select_object(sid, 1).selected == 1
    view = h.rename_object(sid, None, "  box  ")
    assert view.objects[0].name == "box"
    view = h.remove_object(sid, 1)
    assert [r.obj_id for r in view.objects] == [2] and view.selected == 2
    with pytest.raises(UserError, match="no object 1"):
        h.click(sid, 1, 10, 10)


def test_choose_candidate(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    h.click(sid, None, 40, 48)
    for index in (0, 2):
        view = h.choose_candidate(sid, None, index)
        assert "(shown)" in view.candidates[index][1]
        with ctx.use(sid, "image") as work:
            obj = work.annotator.objects[1]
            np.testing.assert_array_equal(obj.mask, obj.candidates[index].mask)
    with pytest.raises(UserError, match="pick 0 to 2"):
        h.choose_candidate(sid, None, 3)


def test_segment_everything_adds_objects(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    view = h.segment_everything(sid, 4)
    with ctx.use(sid, "image") as work:
        count = len(work.annotator.objects)
    assert view.message == f"Found {count} objects." and len(view.objects) == count


def test_segment_everything_reports_progress(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    seen: list[tuple[int, int]] = []
    h.segment_everything(sid, 12, lambda done, total: seen.append((done, total)))
    # 144 grid points in batches of 64, counted up to the total.
    assert seen == [(64, 144), (128, 144), (144, 144)]
    assert h.cancel(sid) == "Nothing is running."


def test_segment_everything_cancel_keeps_what_was_found(ctx: AppContext, monkeypatch) -> None:
    from sam2ui.core.image.generator_parts import build_point_grid
    from sam2ui.core.image.mask_generator import SAM2AutomaticMaskGenerator

    init = SAM2AutomaticMaskGenerator.__init__

    def unfiltered(self, predictor, **kwargs):
        # Random weights: no mask passes the default filters, so turn them off.
        init(self, predictor, **{**kwargs, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})

    monkeypatch.setattr(SAM2AutomaticMaskGenerator, "__init__", unfiltered)
    h = ImageHandlers(ctx)
    image = make_image()
    sid, _ = h.upload(None, image)
    answers: list[str] = []

    def progress(done: int, total: int) -> None:
        if done == 64:  # the user presses Cancel while the second batch waits
            answers.append(h.cancel(sid))

    view = h.segment_everything(sid, 12, progress)
    assert answers == ["Stopping after the current batch of points…"]
    with ctx.use(sid, "image") as work:
        kept = [o.mask for o in work.annotator.objects.values()]
    kept_note = f"kept the {len(kept)} objects found so far."
    assert view.message == f"Stopped after 64 of 144 points; {kept_note}"
    assert len(view.objects) == len(kept) > 0
    # The same masks as a run over the first batch's points alone.
    other, _ = h.upload(None, image)
    with ctx.use(other, "image") as work:
        grid = build_point_grid(12)[:64]
        ids = work.annotator.segment_everything(points_per_side=None, point_grids=[grid])
        alone = [work.annotator.objects[i].mask for i in ids]
    assert len(alone) == len(kept)
    for a, b in zip(kept, alone):
        assert a.shape == (HEIGHT, WIDTH) and a.dtype == bool and np.array_equal(a, b)
    assert h.cancel(sid) == "Nothing is running."  # the run is over; a new one starts clean
    assert h.segment_everything(sid, 4).message.startswith("Found ")


def test_exports(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    with pytest.raises(UserError, match="No masks yet"):
        h.export(sid)
    h.click(sid, None, 40, 48)
    h.add_object(sid)
    h.click(sid, None, 110, 85)
    paths = h.export(sid)
    assert [p.name for p in paths] == ["masks.zip", "masks_coco.json", "cutout_object_2.png"]
    with ctx.use(sid, "image") as work:
        masks = work.annotator.masks
    with zipfile.ZipFile(paths[0]) as zf:
        names = set(zf.namelist())
        assert {"masks.png", "object_1.png", "object_2.png"} <= names
    coco = json.loads(paths[1].read_text())
    assert [a["id"] for a in coco["annotations"]] == [1, 2]
    assert [a["area"] for a in coco["annotations"]] == [int(m.sum()) for m in masks.values()]
    rgba = np.asarray(Image.open(paths[2]))
    assert rgba.shape == (HEIGHT, WIDTH, 4)
    np.testing.assert_array_equal(rgba[..., 3] > 0, masks[2])


def test_user_errors_leave_the_session_usable(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    with pytest.raises(UserError, match="Upload an image first"):
        h.click(None, None, 1, 1)
    with pytest.raises(UserError, match="Upload an image first"):
        h.upload(None, None)
    sid, _ = h.upload(None, make_image())
    with pytest.raises(UserError, match=r"\(500, 5\) is outside the 128x96 image"):
        h.click(sid, None, 500, 5)
    with pytest.raises(UserError, match="points_per_side"):
        h.segment_everything(sid, 0)
    assert " px, IoU " in h.click(sid, None, 40, 48).objects[0].detail
    assert len(h.show(sid).objects) == 1


def test_sessions_are_isolated_and_cleaned_up(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    a, _ = h.upload(None, make_image(), owner="tab-a")
    b, _ = h.upload(None, make_image(), owner="tab-b")
    assert a != b
    h.click(a, None, 40, 48)
    assert h.show(b).objects == []
    # A video session id is not an image session.
    with pytest.raises(UserError, match="Upload a video first"):
        VideoHandlers(ctx).show_frame(a, 0)
    # Closing tab a (unload) ends its session only.
    assert ctx.close_owner("tab-a") == 1
    assert a not in ctx.sessions and b in ctx.sessions
    with pytest.raises(UserError, match=r"^This session was closed\. Upload an image again\.$"):
        h.show(a)
    # Idle eviction ends b too; a new upload in that tab starts over.
    assert ctx.sessions.evict_idle(0.0) == 1
    expired = r"^This session expired after less than a minute without use\. Upload an image"
    with pytest.raises(UserError, match=expired):
        h.click(b, None, 40, 48)
    c, view = h.upload(b, make_image())
    assert c != b and view.objects == []


def test_unavailable_weights_are_reported(app_config: AppConfig) -> None:
    def loader(key: object) -> None:
        raise CheckpointUnavailableError(
            "cannot get sam2.1_hiera_tiny.pt of facebook/sam2.1-hiera-tiny: offline. "
            "Download it with `hf download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt`"
        )

    context = AppContext(app_config, cache=ModelCache(loader))
    assert context.load_model() is False
    assert "sam2.1_hiera_tiny.pt" in context.model_error and "hf download" in context.model_error
    assert "start sam2ui with --checkpoint PATH" in context.model_error
    with pytest.raises(UserError, match="hf download"):
        ImageHandlers(context).upload(None, make_image())
    context.close()


# ---------------------------------------------------------------------------- video


@pytest.fixture
def video_ctx(small_cache: ModelCache):
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", max_video_seconds=5)
    context = AppContext(config, cache=small_cache)
    yield context
    context.close()


def test_video_limits(tmp_path: Path, small_cache: ModelCache, video_file: Path) -> None:
    def handlers(**limits: float) -> VideoHandlers:
        return VideoHandlers(AppContext(AppConfig(device="cpu", **limits), cache=small_cache))

    size_mb = video_file.stat().st_size / 2**20
    with pytest.raises(UserError, match=r"accepts videos up to 0\.001 MB"):
        handlers(max_video_mb=0.001).upload(None, video_file)
    assert size_mb < 0.5
    with pytest.raises(UserError, match=r"is 1\.0 s long; this app accepts videos up to 0\.5 s"):
        handlers(max_video_seconds=0.5).upload(None, video_file)
    with pytest.raises(UserError, match="has 6 frames; this app accepts up to 4"):
        handlers(max_video_frames=4).upload(None, video_file)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(UserError, match="Cannot read this video"):
        handlers().upload(None, bad)


def test_a_video_upload_is_opened_once(
    video_ctx: AppContext, video_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = record_video_opens(monkeypatch, tmp_path / "opened.txt")
    h = VideoHandlers(video_ctx)
    sid, view = h.upload(None, video_file)
    # Checked against the limits and annotated with one opening of the file.
    assert opened() == [str(video_file)]
    assert view.num_frames == 6 and h.click(sid, 3, None, 40, 48).objects[0].detail
    with pytest.raises(UserError, match="has 6 frames; this app accepts up to 4"):
        VideoHandlers(
            AppContext(AppConfig(device="cpu", max_video_frames=4), cache=video_ctx.cache)
        ).upload(None, video_file)
    assert opened() == [str(video_file)] * 2


def test_video_prompt_propagate_and_export(video_ctx: AppContext, video_file: Path) -> None:
    import av

    h = VideoHandlers(video_ctx)
    sid, view = h.upload(None, video_file)
    assert view.num_frames == 6 and view.frame.shape == (HEIGHT, WIDTH, 3)
    with pytest.raises(UserError, match="Click on an object first"):
        list(h.propagate(sid))
    plain = h.show_frame(sid, 2).frame
    view = h.click(sid, 2, None, 40, 48)
    assert view.frame_idx == 2 and view.objects[0].detail.startswith("prompts on frames [2]")
    assert _changed(view.frame, plain) > 0
    calls: list[tuple[int, int]] = []
    views = list(h.propagate(sid, "both", lambda d, t: calls.append((d, t))))
    # Frames 2..5 forward, then 2..0 backward (the start frame is visited by both passes).
    assert calls == [(i, 7) for i in range(1, 8)]
    final = views[-1]
    assert final.message.startswith("Tracked 6 frames") and final.video is not None
    with av.open(str(final.video)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (HEIGHT, WIDTH, 3)
    # A correction click, then propagate again: a new MP4.
    h.click(sid, 4, None, 70, 50, positive=False)
    again = list(h.propagate(sid, "forward"))[-1]
    assert again.video is not None and again.video != final.video
    mp4, zip_path, json_path = h.export(sid)
    assert mp4 == again.video
    with zipfile.ZipFile(zip_path) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) >= 6
    assert json.loads(json_path.read_text())["masklet"]


def test_a_video_prompt_that_encodes_its_frame_is_heavy_work(
    video_ctx: AppContext, video_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clicks never wait for others' encodings: a prompt on a frame whose features must be
    computed first is itself an encoding, scheduled in the heavy lane; the next prompts on
    that frame are quick and go first."""
    from sam2ui.core import Lane

    lanes: list[Lane] = []
    run = video_ctx._run

    def recording(lane: Lane, fn: Any, *args: Any, **kwargs: Any) -> Any:
        lanes.append(lane)
        return run(lane, fn, *args, **kwargs)

    monkeypatch.setattr(video_ctx, "_run", recording)
    h = VideoHandlers(video_ctx)
    sid, _ = h.upload(None, video_file)
    lanes.clear()
    h.click(sid, 3, None, 40, 48)  # frame 3 not encoded yet
    h.click(sid, 3, None, 50, 48, positive=False)
    h.box(sid, 3, None, 20, 30, 60, 66)
    h.undo(sid, 3, 1)
    h.box(sid, 5, None, 20, 30, 60, 66)  # another frame: encoded first again
    assert lanes == [Lane.HEAVY, Lane.INTERACTIVE, Lane.INTERACTIVE, Lane.INTERACTIVE, Lane.HEAVY]


def test_video_cancel_keeps_tracked_frames(video_ctx: AppContext, video_file: Path) -> None:
    h = VideoHandlers(video_ctx)
    sid, _ = h.upload(None, video_file)
    h.click(sid, 0, None, 40, 48)

    def progress(done: int, total: int) -> None:
        if done == 2:
            h.cancel(sid)

    final = list(h.propagate(sid, "forward", progress))[-1]
    assert final.message.startswith("Stopped after 2 of 6 frames")
    with video_ctx.use(sid, "video") as work:
        assert work.annotator.tracked_frames == [0, 1]
    # Still usable: propagate the rest.
    assert list(h.propagate(sid, "forward"))[-1].message.startswith("Tracked")


def test_video_box_and_objects(video_ctx: AppContext, video_file: Path) -> None:
    h = VideoHandlers(video_ctx)
    sid, _ = h.upload(None, video_file)
    view = h.box(sid, 1, None, 20, 30, 60, 66)
    assert view.objects[0].detail.startswith("prompts on frames [1]")
    view = h.add_object(sid, "second")
    assert [r.label for r in view.objects] == ["1: object 1", "2: second"]
    view = h.rename_object(sid, 1, "square")
    assert view.objects[0].name == "square"
    h.undo(sid, 1, 1)
    with video_ctx.use(sid, "video") as work:
        assert not any(p.box or p.clicks for p in work.annotator.objects[1].prompts.values())
    assert [r.obj_id for r in h.remove_object(sid, 1).objects] == [2]
    with pytest.raises(UserError, match="frames 0 to 5"):
        h.show_frame(sid, 6)


def test_new_video_replaces_the_tabs_session(video_ctx: AppContext, tmp_path: Path) -> None:
    h = VideoHandlers(video_ctx)
    first = write_video(tmp_path / "a.mp4", frames=3)
    sid, _ = h.upload(None, first, owner="tab")
    sid2, view = h.upload(sid, first, owner="tab")
    assert sid2 != sid and sid not in video_ctx.sessions and view.num_frames == 3


def test_uploads_of_any_mode_and_bad_files(ctx: AppContext, tmp_path: Path) -> None:
    h = ImageHandlers(ctx)
    # A 16-bit greyscale PNG is shown as its grey levels, not all white.
    ramp = np.tile(np.linspace(0, 65535, WIDTH).round().astype(np.uint16), (HEIGHT, 1))
    path = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(path)
    _, view = h.upload(None, str(path))
    want = np.rint(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(view.overlay[..., 0], want)
    # Not a picture, or over the pixel limit: a message for the user.
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(UserError, match="notes.png is not a picture") as info:
        h.upload(None, str(bad))
    assert str(tmp_path) not in str(info.value)
    small = AppContext(AppConfig(device="cpu", max_image_mp=0.0001), cache=ctx.cache)
    with pytest.raises(UserError, match=r"up to 0.0001 MP \(--max-image-mp\)"):
        ImageHandlers(small).upload(None, str(path))
    small.close()
    assert AppConfig().max_image_mp == 40.0 and AppConfig().max_video_frames == 3000
