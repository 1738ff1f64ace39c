"""What the app is started with: :class:`AppConfig` and its command-line options.

``sam2ui`` (no subcommand), ``sam2ui app ...`` and ``python spaces_app.py`` parse these
options and hand the config to :func:`sam2ui.app.launcher.launch`. Only the standard library
is imported here, so the command line can build its parser without gradio installed.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "DEFAULT_MODEL",
    "MAX_SESSIONS_ENV",
    "MEMORY_BUDGET_ENV",
    "AppConfig",
    "add_app_arguments",
    "config_from_args",
]

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"

# Server-wide limits; the environment variables set them where the command line is not at
# hand (a Space, a container), and the command-line options override both.
MEMORY_BUDGET_ENV = "SAM2UI_MEMORY_BUDGET_MB"
MAX_SESSIONS_ENV = "SAM2UI_MAX_SESSIONS"
# Session state may use 6 GB by default, which fits a 16 GB machine: of its 16 GB, the
# system and other programs keep ~3 GB, the Python process with torch and gradio ~1.5 GB,
# the largest model ~0.9 GB (sam2.1-hiera-large, float32), and the transient work of a
# running encoder, propagation or "segment everything" ~2-3 GB, leaving ~2 GB of headroom.
# An image session holds ~36 MB for a 1080p image on the tiny model at upload (the 30 MB
# embedding and its decoder keys, the image), growing with masks and drawing caches
# (~50 MB after 200 clicks); 64 of them are ~3 GB. Video sessions hold more (memories,
# results, frames), which is what the budget guards: when it is full, new visitors wait.
DEFAULT_MEMORY_BUDGET_MB = 6144.0
DEFAULT_MAX_SESSIONS = 64
# The annotators' own defaults (sam2ui.core.annotate.objects), repeated here so that this
# module imports no more than the standard library; a test checks that they agree.
DEFAULT_MAX_PROMPTS = 200
DEFAULT_MAX_OBJECTS = 255


@dataclass(frozen=True)
class AppConfig:
    """Settings of one app instance.

    Attributes:
        model: hub id (``facebook/sam2.1-hiera-tiny``), variant name (``sam2.1-hiera-small``)
            or the path of a local checkpoint (Meta ``.pt`` or transformers folder).
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda`` or ``mps``.
        dtype: ``float32`` or ``bfloat16``.
        host, port: where the server listens (``port`` 0 or None: gradio picks one).
        max_video_mb: largest accepted video file, in megabytes.
        max_video_seconds: longest accepted video, in seconds.
        max_video_frames: most frames accepted (``None``: only the duration limit counts).
        max_image_mp: largest image accepted, in megapixels (width x height / 10^6).
        idle_timeout_s: a session unused this long is closed (its memory freed).
        max_sessions: most live sessions (``None``: no limit). When the server is full, a
            new visitor is refused ("try again in N minutes"): sessions used within
            ``active_window_s`` are never evicted to make room, older idle ones are.
        memory_budget_mb: total memory of all sessions' state: image embeddings, images,
            masks, undo history, video state (``None``: no limit). The default fits a 16 GB
            machine (see :data:`DEFAULT_MEMORY_BUDGET_MB`).
        active_window_s: a session used this recently is never evicted to make room.
        max_prompts: most prompts (clicks and boxes) of one object.
        max_objects: most objects in one session.
        model_workers: how many model calls (clicks, frames of a propagation) run at once.
        threads: torch's threads for model work: a number, or ``None`` / ``"auto"``
            (``$SAM2UI_THREADS`` if set, else before each model call the CPUs this process
            may use, by affinity and cgroup quota, that other processes leave free: beside a
            busy neighbour this runs 2-4x faster than every core; a mask may then differ in
            a pixel from one made on a quiet machine, as float sums depend on the thread
            count; a fixed number makes runs repeat exactly).
        share: ask gradio for a public share link.
        preload: load the model when the app is built (always on under ZeroGPU).
        analytics: let gradio send its usage analytics (off unless asked for).
        compile: compile the shared model with ``torch.compile`` when it loads, and warm it
            up then (tens of seconds, logged) so that no visitor waits for the compiling.
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "float32"
    host: str = "127.0.0.1"
    port: int | None = 7860
    max_video_mb: float = 100.0
    max_video_seconds: float = 60.0
    max_video_frames: int | None = 3000
    max_image_mp: float = 40.0
    idle_timeout_s: float = 1800.0
    max_sessions: int | None = DEFAULT_MAX_SESSIONS
    memory_budget_mb: float | None = DEFAULT_MEMORY_BUDGET_MB
    active_window_s: float = 300.0
    max_prompts: int = DEFAULT_MAX_PROMPTS
    max_objects: int = DEFAULT_MAX_OBJECTS
    model_workers: int = 1
    threads: int | str | None = None
    share: bool = False
    preload: bool = True
    analytics: bool = False
    compile: bool = False
    launch_kwargs: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.model_workers < 1:
            raise ValueError(f"model_workers must be >= 1, got {self.model_workers}")
        if self.threads is not None and not (
            self.threads == "auto" or (isinstance(self.threads, int) and self.threads >= 1)
        ):
            raise ValueError(f"threads must be a number >= 1 or 'auto', got {self.threads!r}")
        for name in ("max_video_mb", "max_video_seconds", "idle_timeout_s", "max_image_mp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_prompts", "max_objects"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.active_window_s < 0:
            raise ValueError(f"active_window_s must be >= 0, got {self.active_window_s}")
        if self.memory_budget_mb is not None and self.memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be > 0 or None, got {self.memory_budget_mb}")


def _threads(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _positive(int)(text)


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value

    return parse


def _from_env(name: str, parse: Any, default: Any) -> Any:
    """The value of environment variable ``name`` read with ``parse``, else ``default``;
    ValueError naming the variable when it does not parse."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"environment variable {name}: {err}") from None


def _budget(text: str) -> float | None:
    """A memory budget in MB; 0 means no limit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0 (0: no limit)")
    return value or None


def add_app_arguments(parser: argparse.ArgumentParser, *, model_options: bool = True) -> None:
    """The app's options: server, limits and (unless the caller adds its own) the model."""
    if model_options:
        weights = parser.add_mutually_exclusive_group()
        weights.add_argument("--model", metavar="NAME", help=f"default: {DEFAULT_MODEL}")
        weights.add_argument("--checkpoint", metavar="PATH", help="local weights instead")
        parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
        parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
        parser.add_argument(
            "--compile", action="store_true", help="compile the model with torch.compile"
        )
    defaults = AppConfig()
    # A Space (or any gradio host) says where to listen through gradio's own variables.
    host = os.environ.get("GRADIO_SERVER_NAME") or defaults.host
    port = int(os.environ.get("GRADIO_SERVER_PORT") or defaults.port or 0)
    parser.add_argument(
        "--host", default=host, help="interface to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=port, help="port (default: %(default)s; 0: any)"
    )
    parser.add_argument("--share", action="store_true", help="also make a public gradio link")
    parser.add_argument(
        "--max-video-mb",
        type=_positive(float),
        default=defaults.max_video_mb,
        metavar="MB",
        help="largest video file accepted (default: %(default)g)",
    )
    parser.add_argument(
        "--max-video-seconds",
        type=_positive(float),
        default=defaults.max_video_seconds,
        metavar="S",
        help="longest video accepted (default: %(default)g)",
    )
    parser.add_argument(
        "--max-video-frames",
        type=_positive(int),
        default=defaults.max_video_frames,
        metavar="N",
        help="most frames accepted (default: %(default)s)",
    )
    parser.add_argument(
        "--max-image-mp",
        type=_positive(float),
        default=defaults.max_image_mp,
        metavar="MP",
        help="largest image accepted, in megapixels (default: %(default)g)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive(float),
        default=defaults.idle_timeout_s,
        metavar="S",
        help="close a session unused for this long, in seconds (default: %(default)g)",
    )
    parser.add_argument(
        "--max-sessions",
        type=_positive(int),
        default=_from_env(MAX_SESSIONS_ENV, _positive(int), defaults.max_sessions),
        metavar="N",
        help=f"most live sessions; when full, new visitors are asked to try again later "
        f"(default: %(default)s, or ${MAX_SESSIONS_ENV})",
    )
    parser.add_argument(
        "--memory-budget-mb",
        type=_budget,
        default=_from_env(MEMORY_BUDGET_ENV, _budget, defaults.memory_budget_mb),
        metavar="MB",
        help=f"memory of all sessions together (embeddings, images, masks, history; 0: no "
        f"limit); when full, new visitors are asked to try again later "
        f"(default: %(default)s, or ${MEMORY_BUDGET_ENV})",
    )
    parser.add_argument(
        "--active-window",
        type=_positive(float),
        default=defaults.active_window_s,
        metavar="S",
        help="a session used within this many seconds is never evicted to make room "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--max-prompts",
        type=_positive(int),
        default=defaults.max_prompts,
        metavar="N",
        help="most prompts (clicks, boxes) of one object (default: %(default)s)",
    )
    parser.add_argument(
        "--max-objects",
        type=_positive(int),
        default=defaults.max_objects,
        metavar="N",
        help="most objects in one session (default: %(default)s)",
    )
    parser.add_argument(
        "--model-workers",
        type=_positive(int),
        default=defaults.model_workers,
        metavar="N",
        help="model calls that may run at once (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=_threads,
        default=defaults.threads,
        metavar="N|auto",
        help="torch threads for model work (default: $SAM2UI_THREADS, else auto: before "
        "each model call, the CPUs this process may use that other processes leave free)",
    )
    parser.add_argument(
        "--gradio-analytics",
        action="store_true",
        help="let gradio send its usage analytics (default: off)",
    )


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """An :class:`AppConfig` from parsed :func:`add_app_arguments` options."""
    checkpoint = getattr(args, "checkpoint", None)
    model = os.fspath(checkpoint) if checkpoint is not None else (args.model or DEFAULT_MODEL)
    return AppConfig(
        model=model,
        device=args.device,
        dtype=args.dtype,
        host=args.host,
        port=args.port,
        share=args.share,
        max_video_mb=args.max_video_mb,
        max_video_seconds=args.max_video_seconds,
        max_video_frames=args.max_video_frames,
        max_image_mp=args.max_image_mp,
        idle_timeout_s=args.idle_timeout,
        max_sessions=args.max_sessions,
        memory_budget_mb=args.memory_budget_mb,
        active_window_s=args.active_window,
        max_prompts=args.max_prompts,
        max_objects=args.max_objects,
        model_workers=args.model_workers,
        threads=args.threads,
        analytics=getattr(args, "gradio_analytics", False),
        compile=getattr(args, "compile", False),
    )
