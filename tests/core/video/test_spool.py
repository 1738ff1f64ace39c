"""The backward chunk of video files lives in an anonymous temporary file (FrameSpool)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from sam2ui.core.video.sources.spool import FrameSpool

from .test_sources import H264_BFRAMES, H, W, frame_id, write_video

av = pytest.importorskip("av")
from sam2ui.core.video.sources.file import VideoFileSource  # noqa: E402


def frames(n: int, shape: tuple[int, ...] = (5, 7, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def test_round_trip_and_slot_reuse() -> None:
    items = frames(6)
    spool = FrameSpool(items[0].nbytes)
    for i, f in enumerate(items[:4]):
        assert spool.put(i, f)
    assert len(spool) == 4 and 2 in spool and spool.disk_bytes == 4 * items[0].nbytes
    back = spool.pop(2)
    assert back is not None and np.array_equal(back, items[2]) and not back.flags.writeable
    assert spool.pop(2) is None and 2 not in spool
    # the freed slot is reused: the file does not grow
    assert spool.put(10, items[4])
    assert spool.disk_bytes == 4 * items[0].nbytes
    for i, want in ((0, items[0]), (1, items[1]), (3, items[3]), (10, items[4])):
        got = spool.pop(i)
        assert got is not None and np.array_equal(got, want)
    # overwriting an index keeps the newest frame
    spool.put(1, items[0])
    spool.put(1, items[5])
    got = spool.pop(1)
    assert got is not None and np.array_equal(got, items[5])
    spool.clear()
    assert len(spool) == 0 and spool.pop(0) is None
    spool.close()
    assert spool._file is None and spool.disk_bytes == 0


def test_frames_it_cannot_hold_are_refused() -> None:
    spool = FrameSpool(5 * 7 * 3)
    assert not spool.put(0, np.zeros((6, 7, 3), np.uint8))  # larger than a slot
    assert not spool.put(1, np.zeros((5, 7, 3), np.float32))
    assert len(spool) == 0


def test_a_disk_that_fails_turns_the_spool_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    spool = FrameSpool(5 * 7 * 3)
    assert not spool.put(0, frames(1)[0])
    assert len(spool) == 0 and spool.pop(0) is None


def test_the_file_has_no_name(tmp_path: Path) -> None:
    spool = FrameSpool(5 * 7 * 3, directory=str(tmp_path))
    assert spool.put(0, frames(1)[0])
    # Unlinked at creation: nothing to clean up after a crash (Linux; elsewhere deleted on close).
    assert spool._file is not None
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_reverse_walk_keeps_its_chunk_on_disk(tmp_path: Path) -> None:
    path = write_video(tmp_path / "gop.mp4", "libx264", 40, "yuv444p", H264_BFRAMES)
    with VideoFileSource(path, cache_size=2) as src:
        src.get(39)
        for i in range(38, -1, -1):
            assert frame_id(src.get(i)) == i
            if i == 30:
                # the chunk holds the frames still to come, in the file and not in RAM
                assert len(src._chunk) > 0 and src._chunk.disk_bytes >= len(src._chunk) * H * W * 3
        assert len(src._cache._items) <= 2
    assert src._chunk._file is None  # closing the source deletes the file


def test_reverse_walk_without_a_disk_decodes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_video(tmp_path / "gop.mp4", "libx264", 40, "yuv444p", H264_BFRAMES)
    with VideoFileSource(path) as src:
        src.get(39)
        before = dict(src.stats)

        def no_disk(*args: object, **kwargs: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
        assert [frame_id(src.get(i)) for i in range(38, -1, -1)] == list(range(38, -1, -1))
        assert len(src._chunk) == 0
        # correct, at the price of decoding more (one GOP per step at most)
        assert src.stats["decoded"] - before["decoded"] > 39
