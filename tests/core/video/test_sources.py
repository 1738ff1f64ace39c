"""Frame sources: video files written here with PyAV, folders of JPEG/PNG frames, arrays, and the
model preprocessing against the reference's frame loader.

Each synthetic frame carries its index as binary blocks (black/white, survives lossy coding)
over a red/blue band, so a decoded frame's identity and orientation can be checked exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sam2ui.core.video.sources.base import (
    ArraySource,
    FolderSource,
    apply_orientation,
    list_frame_files,
    orientation_from_matrix,
    preprocess_frame,
)
from sam2ui.core.video.sources.open import open_frames

av = pytest.importorskip("av")
from sam2ui.core.video.sources.file import VideoFileSource  # noqa: E402

H, W, BITS = 64, 96, 6


def pattern(i: int, h: int = H, w: int = W) -> np.ndarray:
    """(h, w, 3) uint8: bits of ``i`` as white blocks on top, red (left) / blue (right) below."""
    img = np.zeros((h, w, 3), np.uint8)
    bw = w // BITS
    for b in range(BITS):
        if (i >> b) & 1:
            img[: h // 2, b * bw : (b + 1) * bw] = 255
    img[h // 2 :, : w // 2, 0] = 255
    img[h // 2 :, w // 2 :, 2] = 255
    return img


def frame_id(frame: np.ndarray) -> int:
    """Index encoded by :func:`pattern` in an upright frame."""
    h, w = frame.shape[:2]
    bw = w // BITS
    return sum(1 << b for b in range(BITS) if frame[: h // 2, b * bw : (b + 1) * bw].mean() > 127)


def write_video(
    path: Path,
    codec: str,
    n: int = 24,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    rotation: float | None = None,
    hflip: bool = False,
    start_pts: int | None = None,
    fmt: str | None = None,
) -> Path:
    if rotation is not None and not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (18 can)")
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.options = options or {}
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            if start_pts is not None:
                frame.pts = start_pts + i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


# qp 1, not 0: x264 writes no B-frames when lossless. Keyframes every 8 frames.
H264_BFRAMES = {"qp": "1", "g": "8", "bf": "2"}
VIDEOS = {  # name: (codec, pix_fmt, options, near-lossless)
    "h264.mp4": ("libx264", "yuv444p", H264_BFRAMES, True),
    "vp9.webm": ("libvpx-vp9", "yuv444p", {"lossless": "1", "g": "8"}, True),
    "h264.mkv": ("libx264", "yuv444p", H264_BFRAMES, True),
    "h264.mov": ("libx264", "yuv444p", H264_BFRAMES, True),
    "mpeg4.avi": ("mpeg4", "yuv420p", {"qscale": "1", "g": "8", "bf": "2"}, False),
    "mjpeg.avi": ("mjpeg", "yuvj444p", {"q": "1"}, False),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    paths = {
        name: write_video(root / name, codec, 40, pix, opts)
        for name, (codec, pix, opts, _) in VIDEOS.items()
    }
    for name in ("h264.mp4", "h264.mkv", "h264.mov", "mpeg4.avi"):  # what the tests rely on
        with av.open(str(paths[name])) as container:
            packets = [p for p in container.demux(video=0) if p.size]
        assert sum(p.is_keyframe for p in packets) >= 5, name
        assert any(p.pts != p.dts for p in packets), f"{name} has no B-frames"
    return paths


@pytest.mark.parametrize("name", list(VIDEOS))
def test_video_file_access_orders(videos: dict[str, Path], name: str) -> None:
    with open_frames(videos[name]) as src:
        assert isinstance(src, VideoFileSource)
        assert (len(src), src.height, src.width, src.fps) == (40, H, W, 24.0)
        assert [frame_id(f) for f in src] == list(range(40))
        assert src.stats["seeks"] == 1  # the one at open: sequential decoding never seeks
        order = [17, 3, 20, 0, 39, 5, 4, 38]
        assert [frame_id(src.get(i)) for i in order] == order
        assert [frame_id(f) for _, f in src.frames(reverse=True)] == list(range(39, -1, -1))
        assert [i for i, _ in src.frames(5, 9)] == [5, 6, 7, 8]
        frame = src.get(13)
        assert frame.dtype == np.uint8 and frame.shape == (H, W, 3) and not frame.flags.writeable
        diff = np.abs(frame.astype(int) - pattern(13))
        assert diff.max() <= 3 if VIDEOS[name][3] else diff.mean() < 4


def test_first_pts_not_zero(tmp_path: Path) -> None:
    for name in ("late.mp4", "late.mkv"):
        path = write_video(tmp_path / name, "libx264", 20, "yuv444p", H264_BFRAMES, start_pts=500)
        with VideoFileSource(path) as src:
            assert len(src) == 20
            assert src.time_of(0) == 0.0 and src.time_of(19) == pytest.approx(19 / 24, abs=2e-3)
            assert [frame_id(src.get(i)) for i in (11, 2, 19, 0)] == [11, 2, 19, 0]


def test_reverse_walk_decodes_each_frame_about_once(tmp_path: Path) -> None:
    # B-frames and keyframes every 8 frames; the default chunk holds far more than a GOP.
    path = write_video(tmp_path / "gop.mp4", "libx264", 64, "yuv444p", H264_BFRAMES)
    with VideoFileSource(path) as src:
        src.get(63)
        before = dict(src.stats)
        assert [frame_id(src.get(i)) for i in range(62, -1, -1)] == list(range(62, -1, -1))
        assert src.stats["decoded"] - before["decoded"] <= 64 + 8
        assert src.stats["seeks"] - before["seeks"] <= 2


def test_reverse_walk_with_a_small_chunk_stays_bounded(tmp_path: Path) -> None:
    path = write_video(tmp_path / "long_gop.mp4", "libx264", 48, "yuv444p", {"qp": "0", "g": "48"})
    chunk_frames = 6
    with VideoFileSource(path, cache_size=2, chunk_bytes=chunk_frames * H * W * 3) as src:
        src.get(47)
        before = src.stats["decoded"]
        for i in range(46, -1, -1):
            assert frame_id(src.get(i)) == i
            assert len(src._chunk) < chunk_frames
        # one 48-frame GOP, refilled every 6 frames: sum of (i + 1) over the refills, not 48²/2
        decoded = src.stats["decoded"] - before
        assert decoded <= sum(range(chunk_frames, 49, chunk_frames)) + 48


def test_lru_cache_serves_repeats_without_decoding(videos: dict[str, Path]) -> None:
    with VideoFileSource(videos["h264.mp4"], cache_size=3) as src:
        frames = [src.get(i) for i in (30, 31, 32)]
        decoded = src.stats["decoded"]
        assert src.get(31) is frames[1] and src.get(30) is frames[0]
        assert src.stats["decoded"] == decoded
        src.get(33)  # evicts 32, the least recently used
        assert 32 not in src._cache and 30 in src._cache and 31 in src._cache


@pytest.mark.parametrize(
    ("rotation", "hflip", "expected"),
    [
        (90, False, lambda f: np.rot90(f, 1)),  # counter-clockwise, as VideoFrame.rotation
        (-90, False, lambda f: np.rot90(f, -1)),
        (180, False, lambda f: np.rot90(f, 2)),
        (0, True, lambda f: f[:, ::-1]),
    ],
)
def test_rotation_metadata_is_applied(tmp_path: Path, rotation: int, hflip: bool, expected) -> None:
    for suffix in (".mp4", ".mkv"):
        path = tmp_path / f"rot{suffix}"
        write_video(path, "libx264", 6, "yuv444p", {"qp": "0"}, rotation=rotation, hflip=hflip)
        with VideoFileSource(path) as src:
            want = expected(pattern(4))
            assert (src.height, src.width) == want.shape[:2]
            assert np.abs(src.get(4).astype(int) - want).max() <= 3


def test_orientation_helpers() -> None:
    img = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    one = 65536
    ccw90 = (0, -one, 0, one, 0, 0, 0, 0, 1 << 30)  # what av_display_rotation_set(-90) writes
    assert orientation_from_matrix(ccw90) == (True, True, False)
    np.testing.assert_array_equal(apply_orientation(img, (True, True, False)), np.rot90(img, 1))
    cw90 = (0, one, 0, -one, 0, 0, 0, 0, 1 << 30)
    np.testing.assert_array_equal(
        apply_orientation(img, orientation_from_matrix(cw90)), np.rot90(img, -1)
    )
    assert orientation_from_matrix(None) == (False, False, False)
    assert orientation_from_matrix((one, 0, 0, 0, -one, 0, 0, 0, 1 << 30)) == (False, True, False)
    tilted = (46341, 46341, 0, -46341, 46341, 0, 0, 0, 1 << 30)  # 45 degrees: ignored
    assert orientation_from_matrix(tilted) == (False, False, False)


def test_files_without_timestamps_or_cues(tmp_path: Path) -> None:
    raw = write_video(tmp_path / "raw.h264", "libx264", 20, "yuv444p", H264_BFRAMES, fmt="h264")
    with VideoFileSource(raw) as src:  # an elementary stream: frames are counted
        assert len(src) == 20
        assert [frame_id(src.get(i)) for i in (12, 3, 19, 0, 18)] == [12, 3, 19, 0, 18]
    live = tmp_path / "live.webm"  # a webm as browsers record it: no cues, no duration
    with av.open(str(live), "w", options={"live": "1"}) as container:
        stream = container.add_stream("libvpx-vp9", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.options = {"lossless": "1", "g": "6"}
        for i in range(20):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pattern(i), format="rgb24")))
        container.mux(stream.encode())
    with VideoFileSource(live) as src:
        assert len(src) == 20
        assert [frame_id(src.get(i)) for i in (12, 3, 19, 0, 18)] == [12, 3, 19, 0, 18]


def write_damaged(path: Path, bad: set[int], n: int = 12) -> Path:
    """An mjpeg video whose frames in ``bad`` have garbage payloads (same timestamps)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj444p"
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern(i), format="rgb24")):
                if i in bad:
                    garbage = av.Packet(bytes(50))
                    garbage.pts, garbage.dts = packet.pts, packet.dts
                    garbage.time_base = packet.time_base
                    garbage.stream, garbage.is_keyframe = stream, True
                    packet = garbage
                container.mux(packet)
        container.mux(stream.encode())
    return path


def test_frames_that_do_not_decode_are_replaced_by_the_previous_one(tmp_path: Path) -> None:
    path = write_damaged(tmp_path / "damaged.mkv", {5, 11})
    with VideoFileSource(path) as src:
        assert len(src) == 12
        assert [frame_id(f) for f in src] == [0, 1, 2, 3, 4, 4, 6, 7, 8, 9, 10, 10]
        assert src.substituted == {5, 11}
    with VideoFileSource(path) as src:  # the same through seeks
        assert [frame_id(src.get(i)) for i in (11, 5, 6)] == [10, 4, 6]
    # Leading frames that do not decode are dropped when opening: frame 0 is the first good one.
    with VideoFileSource(write_damaged(tmp_path / "bad_start.avi", {0, 1})) as src:
        assert len(src) == 10
        assert [frame_id(f) for f in src] == list(range(2, 12))


def test_video_file_errors(tmp_path: Path, videos: dict[str, Path]) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        open_frames(tmp_path / "nothere.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="junk.mp4"):
        open_frames(junk)
    cut = tmp_path / "cut.mp4"  # an mp4 cut in half loses its index
    cut.write_bytes(videos["h264.mp4"].read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.mp4"):
        open_frames(cut)
    empty = tmp_path / "empty.mkv"  # a video stream with no packets, and some audio
    with av.open(str(empty), "w") as container:
        video = container.add_stream("mjpeg", rate=24)
        video.width, video.height, video.pix_fmt = W, H, "yuvj420p"
        audio = container.add_stream("aac", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        samples.sample_rate = 8000
        container.mux(audio.encode(samples))
        container.mux(audio.encode())
    with pytest.raises(ValueError, match="empty.mkv contains no video frames"):
        open_frames(empty)
    src = open_frames(videos["vp9.webm"])
    with pytest.raises(IndexError, match=r"40 out of range \[0, 39\]"):
        src.get(40)
    with pytest.raises(IndexError, match=r"-1 out of range"):
        src.get(-1)
    src.close()
    with pytest.raises(ValueError, match="closed"):
        src.get(5)


# ---------------------------------------------------------------------------- folders, arrays


def test_folder_sources_sort_naturally(tmp_path: Path) -> None:
    jpg = tmp_path / "jpg"
    jpg.mkdir()
    for i in range(12):  # "10.jpg" sorts after "9.jpg", as the reference's int() sort
        Image.fromarray(pattern(i)).save(jpg / f"{i}.jpg", quality=95)
    (jpg / "._3.jpg").write_bytes(b"resource fork")  # macOS metadata file: skipped
    (jpg / "notes.txt").write_text("not a frame")
    with open_frames(jpg, fps=12) as src:
        assert isinstance(src, FolderSource)
        assert (len(src), src.height, src.width, src.fps) == (12, H, W, 12.0)
        assert [frame_id(f) for f in src] == list(range(12))
        assert [frame_id(src.get(i)) for i in (11, 2, 10)] == [11, 2, 10]
    png = tmp_path / "png"
    png.mkdir()
    for i in (1, 2, 10, 11):
        Image.fromarray(pattern(i)).save(png / f"frame_{i}.png")
    assert [p.name for p in list_frame_files(png)] == [f"frame_{i}.png" for i in (1, 2, 10, 11)]
    with open_frames(png) as src:
        assert src.fps == 30.0
        np.testing.assert_array_equal(src.get(2), pattern(10))  # PNG: exact


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no JPEG or PNG frames"):
        open_frames(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no JPEG or PNG frames"):
        open_frames(tmp_path)
    Image.fromarray(pattern(0)).save(tmp_path / "0.png")
    Image.fromarray(pattern(1, 32, 48)).save(tmp_path / "1.png")
    src = open_frames(tmp_path)
    with pytest.raises(ValueError, match="same size"):
        src.get(1)
    with pytest.raises(IndexError, match=r"2 out of range \[0, 1\]"):
        src.get(2)


def test_array_sources() -> None:
    frames = [pattern(i) for i in range(5)]
    for video in (frames, np.stack(frames), [Image.fromarray(f) for f in frames]):
        src = open_frames(video, fps=10)
        assert isinstance(src, ArraySource)
        assert (len(src), src.height, src.width, src.fps) == (5, H, W, 10.0)
        for i in (4, 0, 2):
            np.testing.assert_array_equal(src.get(i), frames[i])
    grey = open_frames([np.full((4, 6), 7, np.uint8)])
    assert grey.get(0).shape == (4, 6, 3) and int(grey.get(0).max()) == 7
    with pytest.raises(ValueError, match="no frames"):
        open_frames([])
    with pytest.raises(ValueError, match="uint8"):
        open_frames([np.zeros((4, 6, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        open_frames(np.zeros((2, 4, 6), np.uint8))
    with pytest.raises(ValueError, match="same size"):
        open_frames([np.zeros((4, 6, 3), np.uint8), np.zeros((5, 6, 3), np.uint8)]).get(1)
    with pytest.raises(TypeError, match="torch tensor"):
        open_frames(torch.zeros(2, 4, 6, 3, dtype=torch.uint8))
    with pytest.raises(TypeError):
        open_frames(42)


# ---------------------------------------------------------------------------- preprocessing


@pytest.mark.parity
def test_preprocessing_matches_reference_loader(tmp_path: Path) -> None:
    from sam2.utils.misc import load_video_frames

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for i in range(3):  # smooth gradients plus noise: every resize tap matters
        img = np.stack([(xx + 40 * i) % 256, (yy * 2) % 256, (xx + yy) % 256], -1)
        img = np.clip(img + rng.integers(-30, 30, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / f"{i:05d}.jpg", quality=90)
    size = 256  # 320 -> 256 shrinks, 240 -> 256 enlarges
    ref, ref_h, ref_w = load_video_frames(
        str(tmp_path), size, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    with open_frames(tmp_path) as src:
        ours = torch.stack([preprocess_frame(f, size) for f in src])
        assert (src.height, src.width) == (ref_h, ref_w) == (240, 320)
    assert ours.dtype == ref.dtype == torch.float32 and ours.shape == ref.shape == (3, 3, 256, 256)
    assert torch.equal(ours, ref)  # max |Δ| = 0


def test_preprocess_frame_values() -> None:
    frame = np.zeros((10, 20, 3), np.uint8)
    frame[..., 0] = 255
    out = preprocess_frame(frame, 16)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.tensor((1 - 0.485) / 0.229))
    assert torch.allclose(out[1], torch.tensor(-0.456 / 0.224))
    with pytest.raises(TypeError):
        preprocess_frame(frame.astype(np.float32))


def test_error_messages_name_the_file_only(tmp_path: Path) -> None:
    """What a user reads: the file's name and what is wrong, no folders, no errno."""
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01not a video at all" * 50)
    audio = tmp_path / "voice.m4a"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        samples.sample_rate = 8000
        container.mux(stream.encode(samples))
        container.mux(stream.encode())
    for path, words in ((junk, "is not a video that can be read"), (audio, "has no video track")):
        with pytest.raises(ValueError) as info:
            open_frames(path)
        message = str(info.value)
        assert path.name in message and words in message
        assert str(tmp_path) not in message and "errno" not in message.lower()
