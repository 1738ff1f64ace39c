"""PyAV (``av``) across the releases sam2ui's range admits: 12 up to 19.

What moved, and what sam2ui calls here instead (read from each release's wheel):

- ``av.open(..., metadata_errors=...)``: accepted up to 18, where text metadata is decoded
  strictly unless told otherwise (a file with badly encoded tags then fails to open); 19
  dropped both ``metadata_encoding`` and ``metadata_errors`` (it always decodes with
  ``surrogateescape``) and its ``open`` takes no ``**kwargs``, so passing one is a TypeError.
  :func:`open_input` passes ``metadata_errors="ignore"`` where the installed ``open`` takes it.
- ``Frame.side_data``: up to 18, iterating it gives the side-data objects; from 19 it is a
  proper mapping whose iteration gives the :class:`Type` keys. Lookup by type name
  (``side_data["DISPLAYMATRIX"]``) works in all of them: :func:`side_data_bytes`.
- ``Stream.disposition`` and ``av.stream.Disposition``: absent before 15 (the stream then
  forwards the attribute to its codec context, which raises AttributeError):
  :func:`is_attached_picture`.
- Rationals (``time_base``, ``average_rate``, ``guessed_rate``): ``fractions.Fraction`` or
  ``None`` up to 18; from 19 an ``av.rational.AVRational`` that is falsy when unset (0/1) or
  not a real value (n/0): :func:`rational` gives a Fraction or None for both.
- Errors: ``av.error.FFmpegError`` (older releases called the base class ``av.AVError``,
  which 14 removed) and ``av.error.EOFError``: :data:`FFmpegError`, :data:`FFmpegEOFError`.
- ``CodecContext.thread_type``: a string is accepted by all of them (an enum member too from
  13 on): :func:`set_decoder_threads`.

Writing (``open(..., "w", format=, options=)``, ``add_stream(codec, rate=Fraction)``,
``stream.options``, ``VideoFrame.from_ndarray(..., format="rgb24")``, ``frame.time_base =
Fraction``) is the same in all of them; :func:`open_output`, :func:`add_video_stream` and
:func:`video_frame` keep those calls in one place all the same.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import av
import numpy as np

__all__ = [
    "FFmpegEOFError",
    "FFmpegError",
    "add_video_stream",
    "is_attached_picture",
    "open_input",
    "open_output",
    "rational",
    "set_decoder_threads",
    "side_data_bytes",
    "video_frame",
]


# FFmpeg's AV_DISPOSITION_ATTACHED_PIC, for releases with an integer disposition but no enum.
_ATTACHED_PIC = 0x0400
# Whether an opener takes a keyword that some releases lack (metadata_errors), as learnt;
# keyed by the function object, so a replaced av.open is asked again.
_accepts: dict[tuple[Callable[..., Any], str], bool] = {}


def _error_class(*places: tuple[Any, str]) -> type[Exception]:
    """The first of ``(module, name)`` that names an exception class."""
    for module, name in places:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            return cls
    raise ImportError(f"PyAV {av.__version__} has none of {[n for _, n in places]}")


# The base class of PyAV's FFmpeg errors (``av.AVError`` in old releases), and the one for a
# stream that ends too early.
FFmpegError = _error_class((av.error, "FFmpegError"), (av, "AVError"))
FFmpegEOFError = _error_class((av.error, "EOFError"))


def _signature_accepts(opener: Callable[..., Any], keyword: str) -> bool | None:
    """Whether ``opener``'s signature takes ``keyword``; None when it cannot be read (PyAV's
    ``open`` is a compiled function without one)."""
    try:
        params = inspect.signature(opener).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return True
    return any(p.name == keyword for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def _open(file: str, mode: str, required: dict[str, Any], optional: dict[str, Any]) -> Any:
    """``av.open(file, mode, **required, **optional)``, leaving out the optional keywords the
    installed ``av.open`` does not take."""
    opener: Callable[..., Any] = av.open
    for key in list(optional):
        known = _accepts.get((opener, key))
        if known is None:
            known = _signature_accepts(opener, key)
            if known is not None:
                _accepts[opener, key] = known
        if known is False:
            del optional[key]
    while True:
        try:
            container = opener(file, mode, **required, **optional)
        except TypeError as exc:
            # "open() got an unexpected keyword argument 'metadata_errors'": retry without it.
            rejected = next((k for k in optional if f"'{k}'" in str(exc)), None)
            if rejected is None:
                raise
            _accepts[opener, rejected] = False
            del optional[rejected]
            continue
        for key in optional:
            _accepts[opener, key] = True
        return container


def open_input(path: str | os.PathLike[str]) -> Any:
    """Open a media file for reading (an ``av.container.InputContainer``).

    Text metadata that is not valid UTF-8 never stops a file from opening: releases that
    decode it strictly by default are told to ignore errors, later ones never raise.
    """
    return _open(os.fspath(path), "r", {}, {"metadata_errors": "ignore"})


def open_output(
    path: str | os.PathLike[str],
    format: str | None = None,
    options: Mapping[str, str] | None = None,
) -> Any:
    """Open ``path`` for writing (an ``av.container.OutputContainer``) in container ``format``
    (None: guessed from the name) with muxer ``options`` (e.g. ``{"movflags": "+faststart"}``)."""
    return _open(os.fspath(path), "w", {"format": format, "options": dict(options or {})}, {})


def add_video_stream(
    container: Any,
    codec: str,
    rate: Fraction,
    width: int,
    height: int,
    pix_fmt: str,
    options: Mapping[str, str] | None = None,
) -> Any:
    """A new video stream of ``container`` encoding with ``codec`` at frame ``rate``."""
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = int(width), int(height)
    stream.pix_fmt = pix_fmt
    stream.options = dict(options or {})
    return stream


def video_frame(rgb: np.ndarray, pts: int, time_base: Fraction) -> Any:
    """An ``av.VideoFrame`` holding the ``(H, W, 3)`` uint8 RGB image, stamped ``pts``."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    frame.pts = int(pts)
    frame.time_base = time_base
    return frame


def rational(value: Any) -> Fraction | None:
    """A PyAV rational (Fraction, AVRational, int or None) as a Fraction; None when unset
    (None, 0/1) or not a real number (a zero denominator)."""
    if value is None:
        return None
    num = getattr(value, "numerator", None)
    den = getattr(value, "denominator", None)
    if not isinstance(num, int) or not isinstance(den, int) or den == 0 or num == 0:
        return None
    return Fraction(num, den)


def is_attached_picture(stream: Any) -> bool:
    """Whether ``stream`` is cover art (an attached picture) rather than a video. Always
    False on releases that do not expose the stream's disposition."""
    try:
        disposition = stream.disposition
    except AttributeError:
        return False
    enum = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    flag = int(enum) if enum is not None else _ATTACHED_PIC
    return bool(int(disposition) & flag)


def side_data_bytes(frame: Any, name: str) -> bytes | None:
    """The bytes of a decoded frame's side data of type ``name`` (e.g. ``"DISPLAYMATRIX"``),
    or None when the frame carries none."""
    container = frame.side_data
    try:
        return bytes(container[name])
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    for entry in container:  # older layouts: entries, or keys (typed enum members)
        item = entry if hasattr(entry, "type") else container[entry]
        if getattr(getattr(item, "type", None), "name", None) == name:
            return bytes(item)
    return None


def set_decoder_threads(stream: Any, count: int) -> None:
    """Decode ``stream`` with ``count`` threads (0: FFmpeg picks), frame and slice threading
    both allowed."""
    ctx = stream.codec_context
    try:
        ctx.thread_type = "AUTO"
    except (TypeError, ValueError):
        thread_type = getattr(getattr(av.codec, "context", None), "ThreadType", None)
        if thread_type is not None:
            ctx.thread_type = thread_type.AUTO
    ctx.thread_count = int(count)
