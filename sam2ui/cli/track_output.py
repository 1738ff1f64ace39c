"""What ``sam2ui track`` shows and writes while it tracks: the progress line on stderr, and one
writer thread per output format (masks.zip, masks.json, overlay.mp4) fed frame by frame.

Only the standard library is imported at module level; the engine's writers load in
:func:`start_writers`.
"""

from __future__ import annotations

import importlib.util
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FORMATS", "OUTPUT_FILES", "start_writers"]

FORMATS = ("zip", "json", "mp4")
# The file each format is written to, in the --out folder.
OUTPUT_FILES = {"zip": "masks.zip", "json": "masks.json", "mp4": "overlay.mp4"}


class _Progress:
    """Frames done / total, fps and ETA on stderr: tqdm when installed, else a ``\\r`` line."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.done = 0
        self.quiet = quiet
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.bar: Any = None
        if not quiet and importlib.util.find_spec("tqdm") is not None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", desc="tracking", file=sys.stderr)

    def update(self) -> None:
        self.done += 1
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if now - self.last_draw >= 0.2 or self.done == self.total:
            self.last_draw = now
            print(f"\r{self.line(now - self.start)}", end="", file=sys.stderr, flush=True)

    def line(self, elapsed: float) -> str:
        """The text of the plain progress line after ``elapsed`` seconds."""
        fps = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{int(left / fps) // 60:d}:{int(left / fps) % 60:02d}" if fps > 0 else "?"
        return f"tracking {self.done}/{self.total} frames, {fps:.2f} fps, ETA {eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.quiet and self.done:
            print(file=sys.stderr)


_END = object()
_ABORT = object()


class _Aborted(Exception):
    """Raised inside a writer thread to drop its half-written output."""


# One tracked frame: (frame index, {object id: (H, W) bool mask}, the frame's RGB image).
_Item = tuple[int, dict[int, "np.ndarray"], "np.ndarray"]


class _WriterThread:
    """One output writer consuming frames from a bounded queue in its own thread."""

    def __init__(self, name: str, write: Callable[[Iterator[_Item]], object]) -> None:
        self.name = name
        self.write = write
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"sam2ui-{name}", daemon=True)
        self.thread.start()

    def _items(self) -> Iterator[_Item]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted
            yield item

    def _run(self) -> None:
        try:
            self.write(self._items())
        except _Aborted:
            pass
        except BaseException as err:  # reported by the main thread
            self.error = err

    def put(self, item: object) -> None:
        while self.thread.is_alive():  # a writer that failed takes nothing more
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self, abort: bool = False) -> None:
        self.put(_ABORT if abort else _END)
        self.thread.join()


def start_writers(
    formats: Sequence[str],
    out: Path,
    *,
    height: int,
    width: int,
    fps: float,
    video_id: str,
    frame_count: int,
    names: dict[int, str],
) -> list[_WriterThread]:
    """A writer thread per output format, each fed (frame, masks, rgb) in frame order."""
    from sam2ui.core import write_davis_png_zip, write_overlay_mp4, write_sav_json

    def masks_only(items: Iterator[_Item]) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        return ((f, masks) for f, masks, _ in items)

    def zip_writer(items: Iterator[_Item]) -> object:
        return write_davis_png_zip(
            masks_only(items), out / OUTPUT_FILES["zip"], height=height, width=width
        )

    def json_writer(items: Iterator[_Item]) -> object:
        return write_sav_json(
            masks_only(items),
            out / OUTPUT_FILES["json"],
            height=height,
            width=width,
            video_id=video_id,
            fps=fps,
            frame_count=frame_count,
            object_names=names,
        )

    def mp4_writer(items: Iterator[_Item]) -> object:
        # The mp4 holds the tracked frames only: its frame n is the n-th tracked frame.
        current: dict[int, dict[int, np.ndarray]] = {}

        def frames() -> Iterator[np.ndarray]:
            for n, (_, masks, rgb) in enumerate(items):
                current.clear()
                current[n] = masks
                yield rgb

        return write_overlay_mp4(frames(), current, out / OUTPUT_FILES["mp4"], fps=fps)

    writers = {"zip": zip_writer, "json": json_writer, "mp4": mp4_writer}
    return [_WriterThread(name, writers[name]) for name in formats]
