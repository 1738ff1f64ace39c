"""huggingface_hub across the releases sam2ui's range admits: 0.23 up to 2.x.

What moved (read from the 0.23, 1.0, 1.2 and 2.4 wheels):

- Error classes: 0.23 defines ``HfHubHTTPError`` and ``LocalEntryNotFoundError`` in
  ``huggingface_hub.utils`` (its ``huggingface_hub.errors`` has only a few others, such as
  ``OfflineModeIsEnabled``); later releases define them all in ``huggingface_hub.errors``, and
  2.x re-exports them from ``utils`` only lazily. :func:`hub_errors` looks in ``errors``
  first, then in ``utils``.
- HTTP stack: ``requests`` up to 0.x (its connection errors are OSErrors), ``httpx`` in 1.x,
  ``httpx2`` in 2.x, whose transport errors are not OSErrors. ``hf_hub_download`` turns a
  failed metadata request into ``LocalEntryNotFoundError``, but a connection lost during the
  download itself surfaces as the HTTP library's own error: :attr:`HubErrors.network` lists
  them all.
- ``hf_hub_download``: ``resume_download``, ``force_filename``, ``legacy_cache_layout``,
  ``local_dir_use_symlinks`` and ``proxies`` are gone in 1.x; :func:`download_file` passes
  only ``repo_id``, ``filename``, ``revision``, ``cache_dir`` and ``local_files_only``, which
  every release takes.
- 1.0 to 1.2 (fixed by 1.33) close their shared HTTP client after a refused connection but
  retry with it: an unreachable hub is a ``RuntimeError("Cannot send a request, as the client
  has been closed.")`` there. :func:`download_file` raises ``LocalEntryNotFoundError`` for it
  instead, as the other releases do for an unreachable hub.
- ``constants.HF_HUB_OFFLINE`` is in all of them (2.x adds ``is_offline_mode()``):
  :func:`offline_by_default`.

``huggingface_hub`` is imported only when one of these functions is called.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = ["HubErrors", "download_file", "hub_error", "hub_errors", "offline_by_default"]

# Where each release keeps its error classes, newest first.
_ERROR_MODULES = ("huggingface_hub.errors", "huggingface_hub.utils", "huggingface_hub")
# The HTTP libraries huggingface_hub has used, and their base class for failed transports.
_TRANSPORTS = (("httpx2", "TransportError"), ("httpx", "TransportError"))
# What httpx says when asked to send through a closed client (see download_file).
_CLOSED_CLIENT = "client has been closed"


@dataclass(frozen=True)
class HubErrors:
    """The exception classes a download can raise, as the installed release names them."""

    http: type[Exception]  # the hub answered with an HTTP error (HfHubHTTPError)
    not_cached: type[Exception]  # neither cached nor downloadable (LocalEntryNotFoundError)
    offline: type[Exception]  # HF_HUB_OFFLINE forbids the request (OfflineModeIsEnabled)
    network: tuple[type[Exception], ...]  # the connection failed (OSError and friends)


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def hub_error(name: str) -> type[Exception]:
    """The exception class ``name`` of the installed huggingface_hub, wherever it lives."""
    for module_name in _ERROR_MODULES:
        module = _module(module_name)
        try:
            found = getattr(module, name) if module is not None else None
        except (AttributeError, ImportError):
            found = None
        if isinstance(found, type) and issubclass(found, Exception):
            return found
    raise ImportError(f"huggingface_hub has no error class {name!r} in {_ERROR_MODULES}")


def _network_errors() -> tuple[type[Exception], ...]:
    """OSError, plus the transport errors of the HTTP libraries loaded so far (the one
    huggingface_hub downloads with is loaded with its ``file_download`` module)."""
    found: list[type[Exception]] = [OSError]
    for module_name, class_name in _TRANSPORTS:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            found.append(cls)
    return tuple(found)


def hub_errors() -> HubErrors:
    """The installed release's download errors (see :class:`HubErrors`)."""
    _module("huggingface_hub.file_download")  # loads the HTTP library downloads go through
    return HubErrors(
        http=hub_error("HfHubHTTPError"),
        not_cached=hub_error("LocalEntryNotFoundError"),
        offline=hub_error("OfflineModeIsEnabled"),
        network=_network_errors(),
    )


def offline_by_default() -> bool:
    """Whether huggingface_hub considers itself offline (``HF_HUB_OFFLINE`` as it read it)."""
    from huggingface_hub import constants

    value = getattr(constants, "HF_HUB_OFFLINE", None)
    if value is None:
        is_offline = getattr(constants, "is_offline_mode", None)
        value = is_offline() if callable(is_offline) else False
    return bool(value)


def download_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> Path:
    """``hf_hub_download`` with only the arguments every release takes; the local path."""
    from huggingface_hub import hf_hub_download

    try:
        local = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
    except RuntimeError as exc:
        # huggingface_hub 1.0 to 1.2 close their shared HTTP client after a refused connection
        # and retry with it, so an unreachable hub raises this instead of the
        # LocalEntryNotFoundError that other releases raise for the same failure.
        if _CLOSED_CLIENT not in str(exc):
            raise
        raise hub_error("LocalEntryNotFoundError")(
            f"{filename} of {repo_id} is not cached and the hub could not be reached ({exc})"
        ) from exc
    return Path(str(local))
