"""Download official SAM 2 checkpoints from the Hugging Face Hub (or find them in its cache).

Only the eight official ``facebook/sam2*-hiera-*`` repositories are known. Each holds Meta's
checkpoint (``sam2.1_hiera_tiny.pt`` and so on) and, for transformers, ``config.json`` plus
``model.safetensors``. ``huggingface_hub`` is imported only when something is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from sam2ui.core.compat.hub import download_file, hub_errors, offline_by_default
from sam2ui.core.modeling.config import SAM2Config, get_config

from .reach import PROBE_SECONDS, hub_host, hub_reachable

__all__ = ["CheckpointUnavailableError", "download_checkpoint", "hub_files"]

Layout = Literal["meta", "transformers"]
_TRUTHY = {"1", "on", "yes", "true"}


class CheckpointUnavailableError(RuntimeError):
    """A checkpoint is neither in the local Hugging Face cache nor downloadable right now."""


def _official_config(hub_id: str) -> SAM2Config:
    try:
        return get_config(hub_id)
    except ValueError:
        raise ValueError(
            f"{hub_id!r} is not one of the official SAM 2 hub repositories "
            "(facebook/sam2-hiera-{tiny,small,base-plus,large} and "
            "facebook/sam2.1-hiera-{tiny,small,base-plus,large}); "
            "to load other weights, download them and pass the local path"
        ) from None


def hub_files(hub_id: str, layout: Layout = "meta") -> list[str]:
    """The file names that make up one checkpoint of ``hub_id`` in ``layout``."""
    cfg = _official_config(hub_id)
    if layout == "meta":
        return [cfg.checkpoint_filename]
    if layout == "transformers":
        return ["config.json", "model.safetensors"]
    raise ValueError(f"layout must be 'meta' or 'transformers', got {layout!r}")


def _cache_dir() -> str | None:
    """The hub cache chosen by the environment *now*.

    huggingface_hub reads these variables once, at import; reading them per call lets a
    process (or a test) change them later.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in _TRUTHY
    return offline_by_default()


def _unavailable(hub_id: str, filename: str, revision: str | None, reason: str) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"cannot get {filename} of {hub_id}: {reason}. "
        f"Download it where the hub is reachable with `hf download {hub_id} {filename}{rev}` "
        "(into the same Hugging Face cache, or copy the cache here), "
        "or download the file elsewhere and pass its local path instead of the hub id."
    )


def download_checkpoint(
    hub_id: str, *, revision: str | None = None, layout: Layout = "meta"
) -> Path:
    """Path of an official checkpoint, from the cache or downloaded into it.

    ``layout="meta"`` gives Meta's ``.pt`` file; ``layout="transformers"`` gives the snapshot
    directory holding ``config.json`` and ``model.safetensors``. ``HF_HOME``/``HF_HUB_CACHE``
    choose the cache and ``HF_HUB_OFFLINE=1`` forbids network access; both are read at call
    time. Raises :class:`CheckpointUnavailableError` (naming the repository, the file and how to
    fetch it) when a file is not cached and cannot be downloaded, and ``ValueError`` for a
    repository that is not an official SAM 2 variant.
    """
    files = hub_files(hub_id, layout)
    repo_id = _official_config(hub_id).hub_id
    errors = hub_errors()  # where they live depends on the huggingface_hub release
    offline = _offline()
    # Without a network, huggingface_hub retries for ~25 s: probe once, then use the cache only.
    unreachable = not offline and not hub_reachable()
    cache_dir = _cache_dir()
    paths: list[Path] = []
    for filename in files:
        try:
            local = download_file(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline or unreachable,
            )
        except (errors.not_cached, errors.offline):
            where = cache_dir or "the default Hugging Face cache"
            if offline:
                why = "HF_HUB_OFFLINE is set"
            elif unreachable:
                why = (
                    f"the hub could not be reached (no connection to {hub_host()[0]} within "
                    f"{PROBE_SECONDS:g} s)"
                )
            else:
                why = "the hub could not be reached"
            reason = f"it is not in {where} and {why}"
            raise CheckpointUnavailableError(
                _unavailable(repo_id, filename, revision, reason)
            ) from None
        except errors.http as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointUnavailableError(
                _unavailable(repo_id, filename, revision, f"the hub answered: {first_line}")
            ) from exc
        except errors.network as exc:  # OSError, or the HTTP library's transport errors
            raise CheckpointUnavailableError(
                _unavailable(repo_id, filename, revision, f"{type(exc).__name__}: {exc}")
            ) from exc
        paths.append(local)
    return paths[0] if layout == "meta" else paths[0].parent
