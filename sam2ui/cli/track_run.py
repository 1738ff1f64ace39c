"""Tracking one video into a folder with a model already loaded: what ``sam2ui track`` does after
loading its model, and what each worker of ``sam2ui batch`` does per manifest line, so that
both write the same files for the same input.

Only the standard library is imported at module level; numpy loads in the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .track_output import OUTPUT_FILES, _Progress, start_writers

if TYPE_CHECKING:
    import numpy as np

    from sam2ui.core import ObjectPrompt

__all__ = ["TrackFailed", "TrackRun", "add_prompts", "plan_passes", "track_into", "video_name"]


class TrackFailed(RuntimeError):
    """Tracking or writing an output failed; the message says which and why."""


@dataclass
class TrackRun:
    """What one tracking run did: the frames tracked (``frames``, of ``total`` planned), the
    objects, the files written, and whether Ctrl+C stopped it early."""

    frames: list[int] = field(default_factory=list)
    total: int = 0
    objects: int = 0
    written: list[Path] = field(default_factory=list)
    interrupted: bool = False


def video_name(video: Path) -> str:
    """The ``video_id`` written into masks.json: a file's stem, a folder's name."""
    return video.stem if video.is_file() else video.name


def plan_passes(
    starts: tuple[int, int], num_frames: int, direction: str, max_frames: int | None
) -> list[tuple[int, bool, int]]:
    """The propagation passes: (start frame, reverse, frames yielded)."""
    first, last = starts
    span = num_frames if max_frames is None else max_frames
    passes = []
    if direction in ("forward", "both"):
        passes.append((first, False, min(first + span, num_frames - 1) - first + 1))
    if direction == "both" and first > 0:
        passes.append((first, True, first - max(first - span, 0) + 1))
    if direction == "backward":
        passes.append((last, True, last - max(last - span, 0) + 1))
    return passes


def add_prompts(predictor: Any, state: Any, prompts: Sequence[ObjectPrompt]) -> None:
    """Give the video predictor's ``state`` every prompt (clicks, boxes, masks)."""
    import numpy as np

    for p in prompts:
        if p.mask is not None:
            predictor.add_new_mask(state, p.frame, p.obj_id, p.mask)
            continue
        predictor.add_new_points_or_box(
            state,
            p.frame,
            p.obj_id,
            points=np.array([[q.x, q.y] for q in p.points], np.float32) if p.points else None,
            labels=np.array([q.label for q in p.points], np.int32) if p.points else None,
            box=np.array(p.box, np.float32) if p.box is not None else None,
            clear_old_points=True,
        )


def track_into(
    predictor: Any,
    state: Any,
    frames: Any,
    prompts: Sequence[ObjectPrompt],
    out: Path,
    *,
    formats: Sequence[str],
    direction: str = "both",
    max_frames: int | None = None,
    video_id: str,
    quiet: bool = True,
    stop_on_interrupt: bool = True,
) -> TrackRun:
    """Propagate the prompted ``state`` through ``frames`` and write ``formats`` into ``out``
    (an existing folder). Raises :class:`TrackFailed` when tracking or a writer fails.

    Ctrl+C: with ``stop_on_interrupt`` the frames tracked so far are written and the run comes
    back with ``interrupted`` set (what ``sam2ui track`` does); otherwise the writers are
    aborted and KeyboardInterrupt goes on up (a batch never keeps a partial result)."""
    import numpy as np

    num_frames, height, width = len(frames), frames.height, frames.width
    frame_list = sorted({p.frame for p in prompts})
    passes = plan_passes((frame_list[0], frame_list[-1]), num_frames, direction, max_frames)
    total = sum(count for _, _, count in passes) - (len(passes) - 1)  # the start frame once
    stream = len(passes) == 1 and not passes[0][1]  # forward only: frames come in order
    names = {p.obj_id: p.name for p in prompts if p.name is not None}
    writers = start_writers(
        formats,
        out,
        height=height,
        width=width,
        fps=float(frames.fps),
        video_id=video_id,
        frame_count=num_frames,
        names=names,
    )

    def emit(frame_idx: int, masks: dict[int, np.ndarray]) -> None:
        item = (frame_idx, masks, frames.get(frame_idx))
        for writer in writers:
            writer.put(item)

    def abort_writers() -> None:
        for writer in writers:
            writer.finish(abort=True)

    packed: dict[int, dict[int, np.ndarray]] = {}  # frame -> {id: bit-packed mask}
    progress = _Progress(total, quiet)
    run = TrackRun(total=total, objects=len({p.obj_id for p in prompts}))
    failure: BaseException | None = None
    try:
        for start, reverse, count in passes:
            for frame_idx, obj_ids, logits in predictor.propagate_in_video(
                state, start_frame_idx=start, max_frame_num_to_track=count - 1, reverse=reverse
            ):
                if frame_idx in packed:
                    continue  # the start frame, already given by the forward pass
                binary = (logits > 0).cpu().numpy().reshape(len(obj_ids), height, width)
                ids: list[Any] = list(obj_ids)  # our prompts use int ids
                masks = {int(oid): binary[i] for i, oid in enumerate(ids)}
                if stream:
                    emit(frame_idx, masks)
                    packed[frame_idx] = {}
                else:
                    packed[frame_idx] = {oid: np.packbits(m) for oid, m in masks.items()}
                progress.update()
    except KeyboardInterrupt:
        if not stop_on_interrupt:
            abort_writers()
            raise
        run.interrupted = True
    except (OSError, ValueError, RuntimeError) as err:
        failure = err
    finally:
        progress.close()

    if failure is not None:
        abort_writers()
        raise TrackFailed(f"tracking failed: {failure}") from failure
    if not stream:
        for frame_idx in sorted(packed):
            masks = {
                oid: np.unpackbits(bits, count=height * width).reshape(height, width).view(bool)
                for oid, bits in packed[frame_idx].items()
            }
            emit(frame_idx, masks)
    for writer in writers:
        writer.finish(abort=not packed)
    for writer, name in zip(writers, formats):
        if writer.error is not None:
            raise TrackFailed(f"writing {name} failed: {writer.error}")
        run.written.append(out / OUTPUT_FILES[name])
    run.frames = sorted(packed)
    return run
