"""PyAV releases that cannot be installed next to this one, simulated on the installed PyAV.

PyAV 19 (Python >= 3.12 only) dropped ``av.open``'s ``metadata_errors``/``metadata_encoding``
and takes no ``**kwargs``, made ``Frame.side_data`` a mapping whose iteration gives type keys,
and returns ``AVRational`` instead of ``Fraction``; releases before 15 have no
``Stream.disposition``. Each is imitated here around the real decoder, and a real video is
decoded through sam2ui's file source to check the frames that come out.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

av = pytest.importorskip("av")

from sam2ui.core.compat import pyav  # noqa: E402
from sam2ui.core.exports import write_overlay_mp4  # noqa: E402
from sam2ui.core.video.sources.base import display_matrix, orientation_from_matrix  # noqa: E402
from sam2ui.core.video.sources.file import VideoFileSource  # noqa: E402

H, W, N = 32, 48, 12
REAL_OPEN = av.open
# PyAV 19.0.2's av.open parameters (av/container/core.py), none of them **kwargs.
PYAV19_PARAMS = (
    "mode",
    "format",
    "options",
    "container_options",
    "buffer_size",
    "timeout",
    "io_open",
    "hwaccel",
)


def level(i: int) -> int:
    return 10 + 20 * i


def write_video(path: Path, n: int = N, rotation: float | None = None) -> Path:
    """Grey frames of level 10 + 20 i (exact after decoding, up to rounding), 24 fps."""
    if rotation is not None and not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip(f"PyAV {av.__version__} cannot write a display matrix (18 can)")
    with REAL_OPEN(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.options = {"qp": "0", "g": "4"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n):
            image = np.full((H, W, 3), level(i), np.uint8)
            image[: H // 4, : W // 4] = (255, 0, 0)  # a red top-left corner shows orientation
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def frame_index(frame: np.ndarray) -> int:
    """The i of a frame written by :func:`write_video`, from its grey level."""
    return round((float(frame[H // 2 :, W // 2 :].mean()) - 10) / 20)


def is_red(pixel: np.ndarray) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r >= 250 and g <= 4 and b <= 4


def pyav19_open(calls: list[dict[str, Any]]) -> Callable[..., Any]:
    """av.open with PyAV 19's signature (readable by ``inspect``), forwarding to the real one."""

    def open(
        file: Any,
        mode: str | None = None,
        format: str | None = None,
        options: dict[str, str] | None = None,
        container_options: dict[str, str] | None = None,
        buffer_size: int = 32768,
        timeout: Any = None,
        io_open: Any = None,
        hwaccel: Any = None,
    ) -> Any:
        given = dict(format=format, options=options, container_options=container_options)
        given.update(timeout=timeout, io_open=io_open, hwaccel=hwaccel)
        kwargs = {k: v for k, v in given.items() if v is not None}
        calls.append(dict(mode=mode, **kwargs))
        return REAL_OPEN(file, mode, buffer_size=buffer_size, **kwargs)

    return open


def compiled_pyav19_open(calls: list[dict[str, Any]]) -> Callable[..., Any]:
    """av.open as PyAV 19 ships it: compiled, so ``inspect.signature`` cannot read it, and an
    unknown keyword is a TypeError naming it."""

    def open(file: Any, *args: Any, **kwargs: Any) -> Any:
        unknown = sorted(set(kwargs) - set(PYAV19_PARAMS))
        if unknown:
            raise TypeError(f"open() got an unexpected keyword argument '{unknown[0]}'")
        calls.append(dict(kwargs))
        return REAL_OPEN(file, *args, **kwargs)

    open.__signature__ = "compiled"  # type: ignore[attr-defined]  # inspect raises on it
    return open


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("pyav") / "grey.mp4")


@pytest.mark.parametrize("make_open", [pyav19_open, compiled_pyav19_open])
def test_video_file_opens_where_av_open_has_no_metadata_errors(
    video: Path, monkeypatch: pytest.MonkeyPatch, make_open: Callable[..., Any]
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(av, "open", make_open(calls))
    with VideoFileSource(video) as src:
        assert (len(src), src.height, src.width, src.fps) == (N, H, W, 24.0)
        assert [frame_index(f) for f in src] == list(range(N))
        order = [7, 2, 11, 0, 5]
        assert [frame_index(src.get(i)) for i in order] == order
        grey = src.get(5)[H // 4 :].astype(int)
        assert np.abs(grey - level(5)).max() <= 1  # qp 0: lossless up to RGB/YUV rounding
        assert is_red(src.get(3)[0, 0]) and not is_red(src.get(3)[-1, -1])
        assert src.time_of(6) == 0.25
    assert calls and all("metadata_errors" not in c for c in calls)
    # The writer goes through the same door.
    mask = np.zeros((H, W), bool)
    mask[H // 2 :, W // 2 :] = True
    frames = (np.full((H, W, 3), level(i), np.uint8) for i in range(4))
    out = write_overlay_mp4(frames, {0: {1: mask}}, video.with_name("overlay.mp4"), fps=29.97)
    with VideoFileSource(out) as src:
        assert len(src) == 4 and src.fps == pytest.approx(30000 / 1001)
        untinted, tinted = src.get(1), src.get(0)
        assert np.abs(untinted.astype(int) - level(1)).max() <= 3
        assert np.abs(tinted[: H // 4, : W // 4].astype(int) - level(0)).max() <= 3
        assert np.abs(tinted[-1, -1].astype(int) - level(0)).max() > 30  # tinted under the mask


def test_metadata_errors_still_passed_where_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyAV up to 18 decodes metadata strictly unless told to ignore errors: a file whose
    stream title is not UTF-8 must still open."""
    marker = b"STREAMTITLESTREAMTITLE"
    path = tmp_path / "tagged.mp4"
    with REAL_OPEN(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.metadata["title"] = marker.decode()
        for i in range(3):
            image = np.full((H, W, 3), level(i), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    assert data.count(marker) == 1
    path.write_bytes(data.replace(marker, b"\xc3\x28" * (len(marker) // 2)))  # invalid UTF-8

    calls: list[dict[str, Any]] = []

    def recording_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        container = REAL_OPEN(file, *args, **kwargs)
        calls.append(kwargs)  # the calls the real open accepted
        return container

    monkeypatch.setattr(av, "open", recording_open)
    with VideoFileSource(path) as src:
        assert [frame_index(f) for f in src] == [0, 1, 2]
    expected = "ignore" if int(av.__version__.split(".")[0]) < 19 else None
    assert calls and all(c.get("metadata_errors") == expected for c in calls)


def test_other_type_errors_are_not_swallowed(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("expected str, bytes or os.PathLike object")

    monkeypatch.setattr(av, "open", broken_open)
    with pytest.raises(TypeError, match="PathLike"):
        pyav.open_input(video)


# ----------------------------------------------------------------------------- side data


class SideData19(Mapping[Any, Any]):
    """PyAV 19's ``Frame.side_data``: a mapping iterated by type, readable by index too."""

    def __init__(self, entries: list[Any]) -> None:
        self._by_index = entries
        self._by_type = {e.type: e for e in entries}

    def __len__(self) -> int:
        return len(self._by_type)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._by_type)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return self._by_index[key]
        if isinstance(key, str):
            return self._by_type[type(next(iter(self._by_type)))[key]]
        return self._by_type[key]


class EntriesOnly:
    """An older layout: iteration gives the entries, and nothing can be looked up by name."""

    def __init__(self, entries: list[Any]) -> None:
        self._entries = entries

    def __iter__(self) -> Iterator[Any]:
        return iter(self._entries)

    def __getitem__(self, key: Any) -> Any:
        raise TypeError("indices must be integers")


class FakeFrame:
    def __init__(self, side_data: Any) -> None:
        self.side_data = side_data


def test_display_matrix_with_each_side_data_layout(tmp_path: Path) -> None:
    path = write_video(tmp_path / "rotated.mp4", n=3, rotation=90)
    with REAL_OPEN(str(path)) as container:
        frame = next(container.decode(video=0))
        entries = [frame.side_data[i] for i in range(len(frame.side_data))]
        real = display_matrix(frame)
        del frame
    names = {getattr(e.type, "name", "") for e in entries}
    assert "DISPLAYMATRIX" in names and len(entries) >= 2  # x264 adds an SEI entry too
    assert real is not None and orientation_from_matrix(real) == (True, True, False)
    for layout in (SideData19, EntriesOnly):
        assert display_matrix(FakeFrame(layout(entries))) == real
    without = [e for e in entries if getattr(e.type, "name", "") != "DISPLAYMATRIX"]
    assert display_matrix(FakeFrame(SideData19(without))) is None
    assert display_matrix(FakeFrame(EntriesOnly(without))) is None
    with VideoFileSource(path) as src:  # the rotation reaches the frames: red corner moves
        assert (src.height, src.width) == (W, H)
        frame = src.get(0)
        assert is_red(frame[-1, 0])  # 90 degrees counter-clockwise: top-left to bottom-left
        assert not any(is_red(frame[y, x]) for y, x in ((0, 0), (0, -1), (-1, -1)))


# ----------------------------------------------------------------------------- the rest


class AVRationalLike:
    """PyAV 19's AVRational: numerator/denominator, falsy when unset or not a real value."""

    def __init__(self, num: int, den: int) -> None:
        self.numerator, self.denominator = num, den

    def __bool__(self) -> bool:
        return self.num != 0 and self.den != 0

    @property
    def num(self) -> int:
        return self.numerator

    @property
    def den(self) -> int:
        return self.denominator


def test_rationals_of_every_release(video: Path) -> None:
    assert pyav.rational(Fraction(1, 30000)) == Fraction(1, 30000)
    assert pyav.rational(AVRationalLike(30000, 1001)) == Fraction(30000, 1001)
    assert pyav.rational(24) == Fraction(24)
    for unset in (None, AVRationalLike(0, 1), AVRationalLike(1, 0), AVRationalLike(0, 0)):
        assert pyav.rational(unset) is None
    with pyav.open_input(video) as container:
        stream = container.streams.video[0]
        assert pyav.rational(stream.average_rate) == 24
        assert pyav.rational(stream.time_base) == Fraction(1, 12288)  # mp4 at 24 fps


class Stream12:
    """A stream of PyAV 12 to 14: no disposition (the codec context raises for it)."""

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"'VideoCodecContext' object has no attribute '{name}'")


class IntDisposition:
    def __init__(self, value: int) -> None:
        self.disposition = value


def test_attached_pictures(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pyav.open_input(video) as container:
        assert not pyav.is_attached_picture(container.streams.video[0])
    assert not pyav.is_attached_picture(Stream12())
    assert pyav.is_attached_picture(IntDisposition(0x0400 | 0x0001))
    assert not pyav.is_attached_picture(IntDisposition(0x0001))
    monkeypatch.delattr(av.stream, "Disposition", raising=False)
    assert pyav.is_attached_picture(IntDisposition(0x0400))


class ThreadType(enum.Flag):
    AUTO = 3


class EnumOnlyContext:
    """A codec context that takes only the enum for thread_type."""

    thread_count = -1

    def __init__(self) -> None:
        self._thread_type: Any = None

    @property
    def thread_type(self) -> Any:
        return self._thread_type

    @thread_type.setter
    def thread_type(self, value: Any) -> None:
        if isinstance(value, str):
            raise TypeError("expected ThreadType")
        self._thread_type = value


class ContextStream:
    def __init__(self) -> None:
        self.codec_context = EnumOnlyContext()


def test_decoder_threads(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pyav.open_input(video) as container:
        stream = container.streams.video[0]
        pyav.set_decoder_threads(stream, 2)
        assert stream.codec_context.thread_count == 2
        assert "AUTO" in str(stream.codec_context.thread_type).upper()
    monkeypatch.setattr(av.codec.context, "ThreadType", ThreadType, raising=False)
    fake = ContextStream()
    pyav.set_decoder_threads(fake, 0)
    assert fake.codec_context.thread_type is ThreadType.AUTO
    assert fake.codec_context.thread_count == 0


def test_error_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pyav.FFmpegError is av.error.FFmpegError
    assert issubclass(pyav.FFmpegEOFError, pyav.FFmpegError)

    class AVError(Exception):
        pass

    monkeypatch.delattr(av.error, "FFmpegError")
    monkeypatch.setattr(av, "AVError", AVError, raising=False)
    assert pyav._error_class((av.error, "FFmpegError"), (av, "AVError")) is AVError
    monkeypatch.delattr(av, "AVError")
    with pytest.raises(ImportError, match="FFmpegError"):
        pyav._error_class((av.error, "FFmpegError"), (av, "AVError"))
