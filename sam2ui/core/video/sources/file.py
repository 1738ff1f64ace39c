"""Frames of a video file, decoded lazily with PyAV (FFmpeg).

How :class:`VideoFileSource` finds frame ``i``:

* **Frame table.** At open, the video stream's packets are read once without decoding (no
  pixels, only timestamps and keyframe flags). Frame ``i`` is the packet with the ``i``-th
  smallest presentation timestamp (pts), so B-frames, a first pts other than 0 and variable
  frame rates need no guessing, and ``len`` is exact even where the container stores no frame
  count (webm/mkv). Packets marked "discard" (edit lists) are left out, and frames before the
  first one the decoder produces are dropped from the table. Files without any timestamps fall
  back to counting decoded frames from the start (random access then decodes from the start).
* **Seeking.** Sequential access keeps the decoder where it is and decodes on. A frame that
  lies behind the decoder, or beyond a keyframe ahead of it, makes it seek to the last keyframe
  at or before the frame and decode forward. If the demuxer lands after the wanted frame,
  earlier keyframes are tried (twice), then the start of the file.
* **Caching.** An LRU cache keeps the last ``cache_size`` frames handed out.
* **Walking backwards** (reverse propagation asks T-1, T-2, ..., 0). A cache miss 1 to 4
  frames behind the previous request decodes forward once to the wanted frame and keeps, in a
  chunk bounded by ``chunk_bytes``, the frames before it, starting at the first keyframe
  inside that window (or the last one before the wanted frame); the next steps back are served
  from the chunk, each frame leaving it when handed out. Cost: about one decode per frame when
  a GOP (keyframe interval) fits in the chunk, about GOP / (2 · chunk frames) decodes per frame
  otherwise; never a GOP per frame. The chunk lives in an anonymous temporary file
  (:class:`~sam2ui.core.video.sources.spool.FrameSpool`), not in RAM: walking backwards costs
  no resident memory beyond the LRU cache, and ``chunk_bytes`` of temporary disk at most.
* **Missing frames.** A frame whose packet exists but does not decode is replaced by the
  nearest earlier decoded frame (logged, and listed in ``substituted``); ``len`` never changes.
* **Orientation.** The display matrix (rotation/flip metadata) carried by the decoded frames is
  applied, so ``height``, ``width`` and frames are as a player shows them.

The instance is thread-safe (one lock around decoding).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Generator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sam2ui.core.compat.pyav import (
    FFmpegEOFError,
    FFmpegError,
    is_attached_picture,
    open_input,
    rational,
    set_decoder_threads,
)

from .base import (
    DEFAULT_FPS,
    FrameCache,
    FrameSource,
    apply_orientation,
    display_matrix,
    orientation_from_matrix,
    readonly_view,
)
from .spool import FrameSpool

logger = logging.getLogger(__name__)

_SEEK_RETRIES = 2  # earlier keyframes tried when a seek lands after the wanted frame
_BACK_STEP = 4  # a request at most this far behind the previous one counts as walking back


class VideoFileSource(FrameSource):
    """Random access to the frames of a video file (mp4, mov, webm, mkv, avi, ...).

    Args:
        path: the video file; its first video stream is used (cover-art streams skipped).
        fps: frame rate to report instead of the file's.
        cache_size: frames kept by the LRU cache (each H*W*3 bytes).
        chunk_bytes: disk budget of the chunk kept for backward access (a temporary file
            that vanishes with the source or the process).
        threads: decoder threads (0: FFmpeg picks from the CPU count).
    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable video, no video stream, or no decodable frame.

    ``stats`` counts ``seeks``, ``decoded`` and ``converted`` (to RGB) frames since opening.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | None = None,
        cache_size: int = 8,
        chunk_bytes: int = 256 << 20,
        threads: int = 0,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video not found: {self.path.name}")
        self._threads = int(threads)
        self._lock = threading.RLock()
        self._cache = FrameCache(cache_size)
        self._chunk = FrameSpool(0)  # sized from the first frame
        self._chunk_bytes = int(chunk_bytes)
        self._container: Any = None
        self._gen: Generator[Any, None, None] | None = None
        self._pos: int | None = None  # index of the last frame decoded since the last seek
        self._prev: Any = None  # that frame (PyAV), kept to stand in for a missing next one
        self._floor = 0  # frames below this index are ignored after a seek (open-GOP leaders)
        self._counter = 0  # decoded frames since the last seek (timestamp-less files)
        self._last: int | None = None  # last index asked for
        self.substituted: set[int] = set()
        self.stats = {"seeks": 0, "decoded": 0, "converted": 0}
        self._reformatter: tuple[int, Any] | None = None  # (process id, its RGB converter)
        try:
            self._open()
            self._scan()
            self._first_frame(fps)
        except FFmpegEOFError as exc:
            self.close()
            raise ValueError(
                f"{self.path.name} contains no video frames (empty or cut short)"
            ) from exc
        except FFmpegError as exc:
            self.close()
            logger.info("cannot read video %s: %s", self.path, exc)
            raise ValueError(
                f"{self.path.name} is not a video that can be read: damaged, cut short, or in a "
                "format FFmpeg does not know"
            ) from exc
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ FrameSource

    def __len__(self) -> int:
        return self._length

    @property
    def duration(self) -> float:
        """How long the video plays, in seconds, from its timestamps: the last frame's
        presentation time plus one frame (the mean step), whatever frame rate the file
        declares (a file may declare 1000 fps for frames a second apart). Files without
        timestamps give the stream's or the container's stated duration, else ``len / fps``."""
        n = self._length
        if self._pts is not None and self._time_base is not None and n > 1:
            span = float((self._pts[-1] - self._pts[0]) * self._time_base)
            return span * n / (n - 1)
        if self._stated_duration:
            return self._stated_duration
        return super().duration

    def time_of(self, index: int) -> float:
        """Presentation time of frame ``index`` in seconds from the first frame."""
        if self._pts is None or self._time_base is None:
            return index / self.fps
        return float((self._pts[index] - self._pts[0]) * self._time_base)

    # Pickling (handing a session to a forked worker, sam2ui.core.serving.handoff): the frame table
    # and settings go; the open file, the decoder position and the cached frames do not. The
    # copy reopens the file, so it must still be there.
    _TRANSIENT = (
        "_lock", "_cache", "_chunk", "_container", "_stream", "_gen", "_prev", "_reformatter"
    )  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}
        state.update(_cache_size=self._cache.capacity, _pos=None, _last=None, _counter=0)
        state["_floor"] = 0
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cache_size = state.pop("_cache_size")
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._cache = FrameCache(cache_size)
        self._chunk = FrameSpool(self._frame_bytes)
        self._gen = None
        self._prev = None
        self._container = None
        self._reformatter = None
        try:
            self._open()
        except (FFmpegError, OSError) as exc:
            raise ValueError(f"cannot reopen video {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._gen is not None:
                self._gen.close()
                self._gen = None
            if self._container is not None:
                self._container.close()
                self._container = None
            self._prev = None  # a decoded frame keeps the decoder (and its threads) alive
            self._cache.clear()
            self._chunk.close()

    def _read(self, index: int) -> np.ndarray:
        with self._lock:
            if self._container is None:
                raise ValueError(f"{self.name} is closed")
            frame = self._cache.get(index)
            if frame is None:
                frame = self._chunk.pop(index)
            if frame is None:
                backward = self._last is not None and 0 < self._last - index <= _BACK_STEP
                keep_from = max(index - self._chunk_n + 1, 0) if backward else index
                frame = self._decode_to(index, keep_from)
            self._cache.put(index, frame)
            self._last = index
            return frame

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        self._container = open_input(self.path)
        streams = [s for s in self._container.streams.video if not is_attached_picture(s)]
        if not streams:
            raise ValueError(f"{self.path.name} has no video track (only audio, or pictures?)")
        self._stream = streams[0]
        set_decoder_threads(self._stream, self._threads)

    def _scan(self) -> None:
        """Read every packet's timestamps once (no decoding) to build the frame table."""
        stamps: list[int] = []
        keys: list[int] = []
        start: int | None = None  # smallest timestamp of any kind: where the file starts
        untimed = 0
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or packet.is_discard:
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            for t in (packet.pts, packet.dts):
                if t is not None and (start is None or t < start):
                    start = t
            if ts is None:
                untimed += 1
                continue
            stamps.append(ts)
            if packet.is_keyframe:
                keys.append(ts)
        if not stamps and not untimed:
            raise ValueError(f"{self.path.name} contains no video frames")
        self._time_base: Fraction | None = rational(self._stream.time_base)
        self._start_ts = start if start is not None else 0
        self._stated_duration = self._declared_duration()
        if untimed:
            logger.warning("%s: packets without timestamps; frames are counted", self.path)
            self._set_table(None, len(stamps) + untimed, [])
            return
        pts = sorted(set(stamps))
        if len(pts) < len(stamps):
            logger.warning("%s: %d duplicate timestamps", self.path, len(stamps) - len(pts))
        self._set_table(pts, len(pts), keys)

    def _declared_duration(self) -> float | None:
        """The duration the stream (else the container) states, in seconds, if any."""
        stated = self._stream.duration
        if stated is not None and self._time_base is not None and stated > 0:
            return float(stated * self._time_base)
        total = self._container.duration  # in AV_TIME_BASE units (microseconds)
        return total / 1_000_000 if total is not None and total > 0 else None

    def _set_table(self, pts: list[int] | None, length: int, key_pts: list[int]) -> None:
        self._pts = pts
        self._length = length
        self._pts_index = {t: i for i, t in enumerate(pts)} if pts is not None else {}
        self._keys = sorted(self._pts_index[t] for t in set(key_pts) if t in self._pts_index)
        self._key_ts = {i: pts[i] for i in self._keys} if pts is not None else {}

    def _first_frame(self, fps: float | None) -> None:
        self._seek(None)
        assert self._gen is not None
        for frame in self._gen:
            index = self._index_of(frame)
            if index >= 0:
                break
        else:
            raise ValueError(f"{self.path.name}: no video frame could be decoded (damaged?)")
        if index > 0 and self._pts is not None:  # leading frames the decoder cannot produce
            logger.info("%s: dropping %d undecodable leading frames", self.path, index)
            keys = [self._pts[k] for k in self._keys if k >= index]
            self._set_table(self._pts[index:], self._length - index, keys)
            index = 0
        self._orientation = orientation_from_matrix(display_matrix(frame))
        h, w = frame.height, frame.width
        self.height, self.width = (w, h) if self._orientation[0] else (h, w)
        self._frame_bytes = h * w * 3
        self._chunk_n = max(self._cache.capacity, self._chunk_bytes // self._frame_bytes)
        self._chunk = FrameSpool(self._frame_bytes)
        self._pos = index
        self._cache.put(index, self._convert(frame))
        rate = rational(self._stream.average_rate) or rational(self._stream.guessed_rate)
        pts, time_base = self._pts, self._time_base
        if fps:
            self.fps = float(fps)
        elif rate is not None and rate > 0:
            self.fps = float(rate)
        elif pts is not None and time_base is not None and len(pts) > 1 and pts[-1] > pts[0]:
            self.fps = (len(pts) - 1) / float((pts[-1] - pts[0]) * time_base)
        else:
            self.fps = DEFAULT_FPS

    # ------------------------------------------------------------------ decoding

    def _decoded(self) -> Generator[Any, None, None]:
        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except FFmpegError as exc:
                logger.warning("%s: skipping a packet that does not decode: %s", self.path, exc)
                continue
            for frame in frames:
                self.stats["decoded"] += 1
                yield frame

    def _seek(self, key: int | None) -> None:
        """Restart decoding at keyframe ``key`` (a frame index), or the file start if None."""
        if self._gen is not None:
            self._gen.close()
        ts = self._start_ts if key is None else self._key_ts[key]
        self.stats["seeks"] += 1
        try:
            self._container.seek(ts, stream=self._stream, backward=True)
        except FFmpegError:  # not seekable: reopen, which starts at the beginning
            self._container.close()
            self._open()
            key = None
        self._gen = self._decoded()
        self._pos = None
        self._prev = None
        self._floor = key or 0
        self._counter = 0

    def _index_of(self, frame: Any) -> int:
        """Frame index of a decoded frame (-1 for frames before the table's first)."""
        self._counter += 1
        ts = frame.pts if frame.pts is not None else frame.dts
        if self._pts is None or ts is None:
            if self._pts is None:
                return self._counter - 1
            return (self._pos if self._pos is not None else self._floor - 1) + 1
        index = self._pts_index.get(ts)
        if index is not None:
            return index
        j = bisect.bisect_left(self._pts, ts)
        if j == 0:
            return -1 if ts < self._pts[0] else 0
        if j == len(self._pts) or ts - self._pts[j - 1] <= self._pts[j] - ts:
            return j - 1
        return j

    def _convert(self, frame: Any) -> np.ndarray:
        self.stats["converted"] += 1
        # PyAV's shared converter keeps FFmpeg's scaling threads, which a forked process (a
        # ZeroGPU worker) does not have: it would wait for them forever. Each process that
        # converts gets a converter of its own.
        if self._reformatter is None or self._reformatter[0] != os.getpid():
            from av.video.reformatter import VideoReformatter

            self._reformatter = (os.getpid(), VideoReformatter())
        rgb = self._reformatter[1].reformat(frame, format="rgb24").to_ndarray()
        return readonly_view(apply_orientation(rgb, self._orientation))

    def _key_before(self, index: int) -> int | None:
        if self._pts is None:
            return None
        j = bisect.bisect_right(self._keys, index)
        return self._keys[j - 1] if j else None

    def _decode_to(self, target: int, keep_from: int) -> np.ndarray:
        """Decode up to frame ``target``, keeping frames [keep_from, target) in the chunk."""
        key = self._key_before(target)
        if keep_from < target:  # filling a backward chunk: start at its first keyframe if any
            j = bisect.bisect_left(self._keys, keep_from)
            if j < len(self._keys) and self._keys[j] <= target:
                key = self._keys[j]
        current = self._pos if self._pos is not None else self._floor - 1
        must_seek = (
            self._gen is None or target <= current or (key is not None and key > current + 1)
        )
        if keep_from < target:
            self._chunk.clear()
        # Seek points to try: the keyframe, earlier ones if the demuxer lands too late (or
        # nothing decodes from there), finally the start of the file.
        tries: list[int | None] = [key]
        while tries[-1] is not None and len(tries) <= _SEEK_RETRIES:
            tries.append(self._key_before(tries[-1] - 1))
        if tries[-1] is not None:
            tries.append(None)
        late_frame: Any = None
        for attempt, start in enumerate(tries):
            seek = must_seek or attempt > 0
            if seek:
                self._seek(start)
            found, late = self._run_to(target, keep_from, seek and start is not None)
            if found is not None:
                return found
            late_frame = late_frame if late_frame is not None else late
        if late_frame is not None:
            return self._substitute(target, late_frame)
        raise ValueError(f"{self.path}: frame {target} could not be decoded")

    def _run_to(
        self, target: int, keep_from: int, may_be_late: bool
    ) -> tuple[np.ndarray | None, Any]:
        """Decode on to ``target``. Returns (frame, None), or (None, late_frame) when the
        first frame after a seek is already past the target."""
        assert self._gen is not None
        fresh = self._pos is None
        for frame in self._gen:
            index = self._index_of(frame)
            if index < self._floor:
                continue
            earlier = self._prev  # the last frame decoded before this one (index < target)
            if fresh and index > target and may_be_late:
                return None, frame
            fresh = False
            self._pos, self._prev = index, frame
            if index < target:
                if index >= keep_from:
                    self._chunk.put(index, self._convert(frame))
                continue
            if index == target:
                return self._convert(frame), None
            self._cache.put(index, self._convert(frame))  # overshot: the target is missing
            return self._substitute(target, earlier if earlier is not None else frame), None
        self._gen = None  # end of file before the target
        if self._prev is None:
            return None, None
        return self._substitute(target, self._prev), None

    def _substitute(self, target: int, frame: Any) -> np.ndarray:
        if target not in self.substituted:
            logger.warning("%s: frame %d does not decode; using a neighbour", self.path, target)
            self.substituted.add(target)
        return self._convert(frame)
