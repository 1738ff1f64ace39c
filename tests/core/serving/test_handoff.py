"""Handing session state to a forked process and back (sam2ui.core.serving.handoff)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sam2ui.core.serving import handoff
from sam2ui.core.video.sources.file import VideoFileSource
from tests.core.video.test_sources import frame_id, write_video

needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (not Windows)"
)


def test_shared_modules_go_by_reference_and_others_are_refused() -> None:
    shared = handoff.share(torch.nn.Linear(3, 2))
    state = {"model": shared, "weights": torch.arange(4.0), "lock": threading.RLock()}
    back = handoff.loads(handoff.dumps(state))
    assert back["model"] is shared  # not a copy
    assert torch.equal(back["weights"], state["weights"])
    assert back["lock"] is not state["lock"] and back["lock"].acquire(blocking=False)
    with pytest.raises(handoff.HandoffError, match="Linear that was not shared"):
        handoff.dumps({"model": torch.nn.Linear(3, 2)})


def test_without_fork_state_still_round_trips_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on Windows: no fork at all. Handing state within a process needs none.
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    shared = handoff.share(torch.nn.Linear(3, 2))
    back = handoff.loads(handoff.dumps({"model": shared, "x": torch.ones(2)}))
    assert back["model"] is shared and back["x"].tolist() == [1.0, 1.0]


def _load_in_child(blob: bytes, conn: Any) -> None:
    try:
        handoff.loads(blob)
        conn.send("loaded")
    except handoff.HandoffError as err:
        conn.send(str(err))


def test_a_spawned_process_gets_a_clear_error() -> None:
    # Spawning is Windows' only start method (and available everywhere): the new process
    # has no shared models, so a model reference cannot be resolved there.
    model = handoff.share(torch.nn.Linear(2, 2))
    blob = handoff.dumps({"model": model, "x": torch.ones(2)})
    spawn = multiprocessing.get_context("spawn")
    parent, child = spawn.Pipe()
    process = spawn.Process(target=_load_in_child, args=(blob, child))
    process.start()
    try:
        assert parent.poll(120), "the spawned process sent nothing"
        message = parent.recv()
    finally:
        process.join(timeout=60)
    assert "does not have" in message and "not a spawned process" in message
    assert handoff.loads(blob)["model"] is model  # here it still resolves


def test_unknown_model_ids_are_an_error() -> None:
    model = handoff.share(torch.nn.Linear(2, 2))
    blob = handoff.dumps(model)
    del model  # gone from this process: nothing to refer to
    import gc

    gc.collect()
    with pytest.raises(handoff.HandoffError, match="does not have"):
        handoff.loads(blob)


class _GpuTensorFromWorker:
    """Pickles like a worker's tensor on a device this machine lacks ("meta" stands in)."""

    def __reduce__(self) -> Any:
        return handoff._restore_tensor, (torch.ones(3), "meta")


def test_tensors_return_to_the_device_they_came_from() -> None:
    # The app side keeps CPU copies that remember their device; the worker side restores
    # tensors to it.
    blob = handoff.dumps({"t": _GpuTensorFromWorker(), "cpu": torch.zeros(2)})
    at_app = handoff.loads(blob)
    assert at_app["t"].device.type == "cpu" and torch.equal(at_app["t"], torch.ones(3))
    at_worker = handoff.loads(handoff.dumps(at_app), restore_devices=True)
    assert at_worker["t"].device.type == "meta"  # remembered through the app's CPU copy
    assert at_worker["cpu"].device.type == "cpu"  # CPU tensors stay where they were


def _read_in_child(blob: bytes, conn: Any) -> None:
    source = handoff.loads(blob)
    conn.send([frame_id(source.get(i)) for i in (5, 0, 30, 29)])
    source.close()


def test_video_file_sources_reopen_their_file(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", "libx264", 40, "yuv444p", {"qp": "1", "g": "8"})
    source = VideoFileSource(path)
    assert frame_id(source.get(12)) == 12
    blob = handoff.dumps(source)
    copy = handoff.loads(blob)
    assert (len(copy), copy.fps, copy.height, copy.width) == (40, source.fps, 64, 96)
    assert [frame_id(copy.get(i)) for i in (39, 3, 4)] == [39, 3, 4]
    source.close()
    assert frame_id(copy.get(7)) == 7  # its own file handle
    copy.close()


@needs_fork
def test_video_file_sources_reopen_in_a_forked_process(tmp_path: Path) -> None:
    # As on ZeroGPU.
    path = write_video(tmp_path / "v.mp4", "libx264", 40, "yuv444p", {"qp": "1", "g": "8"})
    source = VideoFileSource(path)
    blob = handoff.dumps(source)
    source.close()
    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()
    process = fork.Process(target=_read_in_child, args=(blob, child))
    process.start()
    assert parent.recv() == [5, 0, 30, 29]
    process.join(timeout=30)
    assert process.exitcode == 0


def test_a_moved_video_file_is_a_clear_error(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", "libx264", 8, "yuv420p")
    blob = handoff.dumps(VideoFileSource(path))
    path.unlink()
    with pytest.raises(ValueError, match="cannot reopen video"):
        handoff.loads(blob)


def test_image_state_round_trip(tmp_path: Path) -> None:
    from sam2ui.core import build_sam2
    from sam2ui.core.annotate.image import ImageAnnotator
    from sam2ui.core.image.predictor import SAM2ImagePredictor
    from tests.app.conftest import SMALL, make_image

    model = handoff.share(build_sam2(SMALL))
    annotator = ImageAnnotator(SAM2ImagePredictor(model))
    annotator.set_image(make_image())
    first = annotator.add_object()
    annotator.add_click(first, 40, 48)
    copy = handoff.loads(handoff.dumps(annotator))
    assert copy.predictor.model is model
    assert np.array_equal(copy.masks[first], annotator.masks[first])
    # The copy goes on where the original is: the same next prediction.
    copy.add_click(first, 90, 20, positive=False)
    annotator.add_click(first, 90, 20, positive=False)
    assert np.array_equal(copy.masks[first], annotator.masks[first])
