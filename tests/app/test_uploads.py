"""Uploads: regular files only; a video's length from its timestamps, and the frame cap."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2ui.app.context import AppContext, UserError
from sam2ui.app.image_handlers import ImageHandlers
from sam2ui.app.options import AppConfig
from sam2ui.app.video_handlers import VideoHandlers
from sam2ui.core import ModelCache, open_frames
from tests.app.conftest import make_image

av = pytest.importorskip("av")


def write_timed(path: Path, container: str, frames: int, declared_fps: int, step_ms: int) -> Path:
    """A 16x16 video of ``frames`` frames whose stream declares ``declared_fps`` while its
    timestamps are ``step_ms`` apart (mpeg4, no B-frames: packets come in order)."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("mpeg4", rate=declared_fps)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        written = 0

        def mux(packets: list) -> None:
            nonlocal written
            for packet in packets:
                packet.time_base = tb
                packet.pts = packet.dts = written * step_ms
                written += 1
                out.mux(packet)

        for i in range(frames):
            picture.pts = i
            mux(stream.encode(picture))
        mux(stream.encode())
    return path


@pytest.fixture
def handlers(small_cache: ModelCache):
    context = AppContext(AppConfig(model="sam2.1-hiera-tiny", device="cpu"), cache=small_cache)
    yield ImageHandlers(context), VideoHandlers(context)
    context.close()


def test_a_folder_is_not_an_upload(handlers, tmp_path: Path, video_file: Path) -> None:
    images, videos = handlers
    folder = tmp_path / "frames"
    folder.mkdir()
    make_image_file = folder / "00000.png"
    Image.fromarray(make_image()).save(make_image_file)  # it would read as a 1-frame video
    with pytest.raises(UserError, match="That upload is a folder; upload a video as a single"):
        videos.upload(None, folder)
    with pytest.raises(UserError, match="That upload is a folder; upload an image as a single"):
        images.upload(None, str(folder))
    with pytest.raises(UserError, match="That upload is gone from the server"):
        videos.upload(None, tmp_path / "missing.mp4")
    assert len(images.ctx.sessions) == 0
    _, view = videos.upload(None, video_file)  # a regular file still opens
    assert view.num_frames == 6
    _, view = images.upload(None, str(make_image_file))
    assert view.message.startswith("128 x 96 image")


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_video_length_comes_from_timestamps(handlers, tmp_path: Path, container: str) -> None:
    """3,000 frames declared at 1000 fps, stamped 33 ms apart: 99 s long, not 3 s."""
    path = write_timed(tmp_path / f"v.{container}", container, 3000, 1000, 33)
    with open_frames(path) as source:
        assert len(source) == 3000
        assert source.duration == pytest.approx(99.0, abs=0.01)
    _, videos = handlers
    with pytest.raises(UserError, match=r"The video is 99\.0 s long; this app accepts videos up"):
        videos.upload(None, path)


def test_mkv_declared_rate_is_not_trusted(tmp_path: Path) -> None:
    """Matroska states a frame rate of its own (DefaultDuration): here 1000 fps, which would
    make the video 3 s long; its timestamps say 99 s."""
    path = write_timed(tmp_path / "v.mkv", "matroska", 3000, 1000, 33)
    with open_frames(path) as source:
        assert source.fps == pytest.approx(1000.0)  # what the file declares
        assert len(source) / source.fps == pytest.approx(3.0)  # the old, fps-based length
        assert source.duration == pytest.approx(99.0, abs=0.01)


def test_the_default_frame_cap_applies(handlers, tmp_path: Path) -> None:
    """A short video of very many frames (3 s at 1000 fps) is turned away by the frame cap."""
    assert AppConfig().max_video_frames == 3000
    path = write_timed(tmp_path / "fast.mp4", "mp4", 3001, 1000, 1)
    with open_frames(path) as source:
        assert source.duration == pytest.approx(3.001, abs=0.001)
    _, videos = handlers
    with pytest.raises(UserError, match="The video has 3001 frames; this app accepts up to 3000"):
        videos.upload(None, path)
    assert len(videos.ctx.sessions) == 0
