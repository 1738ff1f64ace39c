"""The work of ``sam2ui batch`` on one machine: the manifest's lines, and a worker that loads the
model once and turns lines into result folders and result rows.

:class:`BatchWorker` is the callable class Ray Data's ``map_batches`` runs (one per worker
process), and needs no Ray itself: a batch of lines in, a batch of result rows out. Each line is
written to a hidden folder in the output folder and renamed to ``DIR/<id>`` only once complete,
so a folder of that name is always a finished result. Only the standard library is imported at
module level.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_TRIES",
    "PARTIAL_PREFIX",
    "TRIES_FOLDER",
    "BatchItem",
    "BatchOptions",
    "BatchWorker",
    "ManifestError",
    "read_manifest",
    "result_row",
    "switch_policy",
]

# A manifest id becomes a folder name: letters, digits, ".", "_" and "-", not starting with ".".
_ID = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}")
PARTIAL_PREFIX = ".partial-"
# Where each line's tries are counted (DIR/.tries/<id>), so that a line that kills every worker
# process running it fails after MAX_TRIES instead of being retried forever.
TRIES_FOLDER = ".tries"
MAX_TRIES = 4


class ManifestError(ValueError):
    """A manifest line that cannot be run as written; the message names the line."""


@dataclass(frozen=True)
class BatchItem:
    """One manifest line: its id, ``kind`` ("video" or "image"), the input and the prompt file
    (absolute paths: relative ones are read from the manifest's folder)."""

    id: str
    kind: str
    path: str
    prompts: str


@dataclass(frozen=True)
class BatchOptions:
    """What every worker needs to know, as plain values (it travels to the worker processes)."""

    source: str
    device: str = "auto"
    dtype: str = "float32"
    formats: tuple[str, ...] = ("zip", "json", "mp4")
    direction: str = "both"
    max_frames: int | None = None
    allow_outside_paths: bool = False
    threads: int | None = None
    compile: bool = False  # torch.compile, warmed up once per worker when its model loads
    # The kinds of line ("video", "image") whose predictor a worker loads when it starts, so
    # that no line's time (its result row's "seconds") holds the model's loading.
    preload: tuple[str, ...] = ()
    # Run the tracking threads at the normal scheduling policy when the worker process started
    # at SCHED_BATCH, as the processes of a local cluster do (see ``batch_ray.start_ray``).
    normal_policy: bool = False


def switch_policy(current: str, new: str) -> bool:
    """Move the calling thread, and so the threads it starts from now on, from the scheduling
    policy named ``current`` (``"SCHED_OTHER"``, the normal one, or ``"SCHED_BATCH"``: moves
    between these two need no privilege) to ``new``. Whether it moved: not from another
    policy, nor on a system without these."""
    old, to = getattr(os, current, None), getattr(os, new, None)
    try:
        if old is None or to is None or os.sched_getscheduler(0) != old:
            return False
        os.sched_setscheduler(0, to, os.sched_param(0))
        return True
    except OSError:  # not allowed here: the work still runs, only less smoothly
        return False


def read_manifest(path: Path) -> list[BatchItem]:
    """The manifest's lines (JSON objects; blank lines and lines starting with ``#`` are
    skipped). Raises :class:`ManifestError` for an unreadable file, a line that is not such
    an object, a bad or repeated id, or a line with neither or both of video and image."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read the manifest {path}: {err}") from None
    base = path.absolute().parent
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
        raw_id = row.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise ManifestError(f'{where}: "id" is required: a string or a number')
        item_id = str(raw_id)
        if not _ID.fullmatch(item_id) or item_id in (".", ".."):
            raise ManifestError(
                f"{where}: id {item_id!r} cannot name a folder: use letters, digits, '.', '_' "
                "and '-' (not first '.'), at most 200 characters"
            )
        if item_id in seen:
            raise ManifestError(f"{where}: id {item_id!r} repeats line {seen[item_id]}")
        seen[item_id] = number
        kinds = [k for k in ("video", "image") if k in row]
        if len(kinds) != 1:
            raise ManifestError(f'{where}: give exactly one of "video" and "image"')
        kind = kinds[0]
        for key in (kind, "prompts"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ManifestError(f'{where}: "{key}" must be a path (a string)')
        items.append(BatchItem(item_id, kind, str(base / row[kind]), str(base / row["prompts"])))
    if not items:
        raise ManifestError(f"the manifest {path} has no lines to run")
    return items


def result_row(
    item_id: str,
    status: str,
    *,
    frames: int = 0,
    objects: int = 0,
    seconds: float = 0.0,
    error: str | None = None,
) -> dict[str, Any]:
    """One row of results.jsonl."""
    return {
        "id": item_id,
        "status": status,
        "frames": frames,
        "objects": objects,
        "seconds": round(seconds, 3),
        "error": error,
    }


class BatchWorker:
    """Loads the model once (the video predictor, and the image one when an image line comes)
    and runs manifest lines into ``out``. ``options`` is :class:`BatchOptions` as a dict."""

    def __init__(self, options: dict[str, Any], out: str) -> None:
        listed = ("formats", "preload")  # tuples, which travel as lists
        tuples: dict[str, Any] = {k: tuple(options[k]) for k in listed if k in options}
        self.options = BatchOptions(**{**options, **tuples})
        self.out = Path(out)
        self._predictors: dict[str, Any] = {}
        if self.options.normal_policy:
            # Before torch starts its threads, which take this thread's policy.
            switch_policy("SCHED_BATCH", "SCHED_OTHER")
        from sam2ui.core import configure_threads, resolve_device

        self.device = resolve_device(self.options.device).type  # "auto": as the engine picks
        if self.device == "cpu":
            configure_threads(self.options.threads)
        for kind in self.options.preload:
            try:
                self.predictor(kind)
            except Exception:  # each line of this kind fails with the reason when it runs
                continue

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Ray Data's entry: columns of :class:`BatchItem` fields in, result columns out."""
        if self.options.normal_policy:
            switch_policy("SCHED_BATCH", "SCHED_OTHER")  # Ray Data calls from its own thread
        rows = [
            self.run(BatchItem(*(str(batch[k][i]) for k in ("id", "kind", "path", "prompts"))))
            for i in range(len(batch["id"]))
        ]
        return {key: [row[key] for row in rows] for key in rows[0]} if rows else {}

    def predictor(self, kind: str) -> Any:
        """The video or image predictor, loaded on first use."""
        if kind not in self._predictors:
            from sam2ui.core import SAM2ImagePredictor, SAM2VideoPredictor, resolve_dtype, warm_up

            cls = SAM2VideoPredictor if kind == "video" else SAM2ImagePredictor
            opts = self.options
            predictor = cls.from_pretrained(
                opts.source, device=self.device, dtype=resolve_dtype(opts.dtype),
                compile=opts.compile,
            )  # fmt: skip
            if opts.compile:
                warm_up(predictor)  # here, so that no line's time includes the compiling
            self._predictors[kind] = predictor
        return self._predictors[kind]

    def run(self, item: BatchItem) -> dict[str, Any]:
        """Run one line into ``out/<id>``; a result row, "failed" with the reason on any error
        (the output folder is then left as it was)."""
        start = time.monotonic()
        tries = self._count_try(item.id)
        if tries > MAX_TRIES:
            return result_row(
                item.id,
                "failed",
                error=f"the worker process died while running it, {MAX_TRIES} times",
            )
        partial = self.out / f"{PARTIAL_PREFIX}{item.id}-{uuid.uuid4().hex[:8]}"
        try:
            partial.mkdir(parents=True)
            if item.kind == "video":
                frames, objects = self._video(item, partial)
            else:
                frames, objects = self._image(item, partial)
            final = self.out / item.id
            if final.exists():  # a result of another run that finished first: keep it
                shutil.rmtree(partial, ignore_errors=True)
            else:
                os.replace(partial, final)
        except Exception as err:  # one line's failure never stops the others
            shutil.rmtree(partial, ignore_errors=True)
            message = str(err) or type(err).__name__
            return result_row(item.id, "failed", seconds=time.monotonic() - start, error=message)
        except BaseException:  # Ctrl+C or the worker stopping: nothing is marked done
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return result_row(
            item.id, "ok", frames=frames, objects=objects, seconds=time.monotonic() - start
        )

    def _count_try(self, item_id: str) -> int:
        """Count one more try of the line (one worker runs a line at a time); the count."""
        folder = self.out / TRIES_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        counter = folder / item_id
        try:
            tries = int(counter.read_text() or 0) + 1
        except (OSError, ValueError):
            tries = 1
        counter.write_text(str(tries))
        return tries

    def _prompts(self, item: BatchItem) -> list[Any]:
        from sam2ui.core import load_prompt_file

        allow = self.options.allow_outside_paths
        return load_prompt_file(item.prompts, allow_outside_paths=allow)

    def _video(self, item: BatchItem, out: Path) -> tuple[int, int]:
        from sam2ui.core import open_frames, validate_prompts

        from .track_run import add_prompts, track_into, video_name

        prompts = self._prompts(item)
        video = Path(item.path)
        if not video.exists():
            raise FileNotFoundError(f"video not found: {video}")
        try:
            frames = open_frames(video)
        except (OSError, ValueError, ImportError) as err:
            raise ValueError(f"cannot read video {video}: {err}") from None
        try:
            if len(frames) == 0:
                raise ValueError(f"the video {video} has no frames")
            validate_prompts(prompts, len(frames), frames.width, frames.height)
            predictor = self.predictor("video")
            state = predictor.init_state(frames)
            try:
                add_prompts(predictor, state, prompts)
                opts = self.options
                run = track_into(
                    predictor,
                    state,
                    frames,
                    prompts,
                    out,
                    formats=opts.formats,
                    direction=opts.direction,
                    max_frames=opts.max_frames,
                    video_id=video_name(video),
                    stop_on_interrupt=False,
                )
            finally:
                predictor.reset_state(state)
        finally:
            frames.close()
        return len(run.frames), run.objects

    def _image(self, item: BatchItem, out: Path) -> tuple[int, int]:
        from sam2ui.core import check_prompts_inside, load_image

        from .segment import predict_mask, save_mask

        prompts = self._prompts(item)
        seen: set[int] = set()
        for p in prompts:
            if p.frame != 0 or p.mask is not None:
                raise ValueError(f"{p.where}: an image takes clicks and boxes on frame 0 only")
            if p.obj_id in seen:
                raise ValueError(f"{p.where}: object {p.obj_id} is prompted twice")
            seen.add(p.obj_id)
        rgb = load_image(item.path)
        height, width = rgb.shape[:2]
        for p in prompts:
            try:
                check_prompts_inside(p.points, p.box, width, height, "image")
            except ValueError as err:
                raise ValueError(f"{p.where}: {err}") from None
        predictor = self.predictor("image")
        predictor.set_image(rgb)
        for p in prompts:
            mask, _, _ = predict_mask(predictor, p.points, p.box)
            save_mask(mask, out / f"object_{p.obj_id}.png")
        return 1, len(prompts)


def options_dict(options: BatchOptions) -> dict[str, Any]:
    """:class:`BatchOptions` as the plain dict :class:`BatchWorker` takes."""
    return {**asdict(options), "formats": list(options.formats)}
