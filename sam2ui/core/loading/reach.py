"""Whether the Hugging Face Hub answers at all, found out in about a second.

Without a network, ``huggingface_hub`` retries every request five times with growing pauses
(about 25 s) before it falls back to its cache, and sam2ui asks once per file, at start and
on every model load. :func:`hub_reachable` opens one TCP connection to the hub's host (the
``HF_ENDPOINT`` one) with a short deadline, in a helper thread so that a hanging name lookup
cannot hold the caller either; the answer is reused for :data:`RECHECK_SECONDS`. Behind an
HTTP proxy (``HTTPS_PROXY`` and friends) the host cannot be probed directly, so the hub is
taken as reachable and huggingface_hub's own handling applies.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from urllib.parse import urlsplit

__all__ = ["PROBE_SECONDS", "RECHECK_SECONDS", "hub_host", "hub_reachable"]

PROBE_SECONDS = 1.0
RECHECK_SECONDS = 30.0
_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_last: dict[tuple[str, int], tuple[float, bool]] = {}
_lock = threading.Lock()


def hub_host() -> tuple[str, int]:
    """(host, port) of the hub endpoint in use."""
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    return url.hostname or "huggingface.co", port


def _connects(host: str, port: int, timeout: float) -> bool:
    answer: list[bool] = []

    def probe() -> None:
        # Any failure means "not reachable"; this thread may outlive its caller, so nothing
        # it raises must surface as an unhandled thread exception.
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answer.append(True)
        except Exception:
            answer.append(False)

    worker = threading.Thread(target=probe, name="sam2ui-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(answer and answer[0])


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether a connection to the hub's host opens within ``timeout`` seconds (cached)."""
    if any(os.environ.get(name) for name in _PROXIES):
        return True
    key = hub_host()
    now = time.monotonic()
    with _lock:
        seen = _last.get(key)
        if seen is not None and now - seen[0] < RECHECK_SECONDS:
            return seen[1]
    ok = _connects(key[0], key[1], timeout)
    with _lock:
        _last[key] = (time.monotonic(), ok)
    return ok


def forget() -> None:
    """Drop the cached answers (tests, or after the network came back)."""
    with _lock:
        _last.clear()
