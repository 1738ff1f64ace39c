"""huggingface_hub layouts that cannot be installed next to this one, simulated.

0.23 keeps ``HfHubHTTPError`` and ``LocalEntryNotFoundError`` in ``huggingface_hub.utils``
(its ``errors`` module lacks them); later releases define them in ``huggingface_hub.errors``
and may stop re-exporting them from ``utils``. 1.x and 2.x download with httpx / httpx2,
whose connection errors are not OSErrors.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import huggingface_hub
import huggingface_hub.errors as real_errors
import huggingface_hub.file_download  # loads the HTTP library before any test fakes one
import pytest
from huggingface_hub import constants

from sam2ui.core.compat import hub
from sam2ui.core.loading import hub as loading_hub
from sam2ui.core.loading.hub import CheckpointUnavailableError, download_checkpoint


def module(name: str, **classes: type[Exception]) -> types.ModuleType:
    fake = types.ModuleType(name)
    for key, value in classes.items():
        setattr(fake, key, value)
    return fake


def test_errors_module_without_utils_reexports(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release whose ``utils`` no longer re-exports the error classes."""
    if not hasattr(real_errors, "HfHubHTTPError"):
        pytest.skip(f"huggingface_hub {huggingface_hub.__version__} keeps them in utils only")
    monkeypatch.setitem(sys.modules, "huggingface_hub.utils", module("huggingface_hub.utils"))
    errors = hub.hub_errors()
    assert errors.http is real_errors.HfHubHTTPError
    assert errors.not_cached is real_errors.LocalEntryNotFoundError
    assert errors.offline is real_errors.OfflineModeIsEnabled


def test_errors_kept_in_utils_as_in_0_23(monkeypatch: pytest.MonkeyPatch) -> None:
    class OfflineModeIsEnabled(ConnectionError):
        pass

    class HfHubHTTPError(OSError):
        pass

    class LocalEntryNotFoundError(HfHubHTTPError, FileNotFoundError):
        pass

    old_errors = module("huggingface_hub.errors", OfflineModeIsEnabled=OfflineModeIsEnabled)
    old_utils = module(
        "huggingface_hub.utils",
        HfHubHTTPError=HfHubHTTPError,
        LocalEntryNotFoundError=LocalEntryNotFoundError,
        OfflineModeIsEnabled=OfflineModeIsEnabled,
    )
    monkeypatch.setitem(sys.modules, "huggingface_hub.errors", old_errors)
    monkeypatch.setitem(sys.modules, "huggingface_hub.utils", old_utils)
    errors = hub.hub_errors()
    assert errors.http is HfHubHTTPError
    assert errors.not_cached is LocalEntryNotFoundError
    assert errors.offline is OfflineModeIsEnabled
    monkeypatch.setitem(sys.modules, "huggingface_hub.utils", module("huggingface_hub.utils"))
    monkeypatch.delattr(huggingface_hub, "HfHubHTTPError", raising=False)
    monkeypatch.setattr(huggingface_hub, "__getattr__", lambda name: None, raising=False)
    with pytest.raises(ImportError, match="HfHubHTTPError"):
        hub.hub_error("HfHubHTTPError")


def test_network_errors_cover_the_http_library() -> None:
    errors = hub.hub_errors()
    assert errors.network[0] is OSError
    for name in ("httpx2", "httpx"):
        library = sys.modules.get(name)
        if library is not None:
            assert issubclass(library.ConnectError, errors.network), name
    try:
        import requests
    except ImportError:  # 1.x and 2.x do not need it
        return
    assert issubclass(requests.ConnectionError, errors.network)  # 0.x's: an OSError


def test_transport_error_becomes_checkpoint_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class TransportError(Exception):  # like httpx's: not an OSError
        pass

    class ConnectError(TransportError):
        pass

    library = module("httpx2", TransportError=TransportError, ConnectError=ConnectError)
    monkeypatch.setitem(sys.modules, "httpx2", library)

    def refused(*args: Any, **kwargs: Any) -> Path:
        raise ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(loading_hub, "download_file", refused)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(CheckpointUnavailableError) as info:
        download_checkpoint("facebook/sam2.1-hiera-tiny")
    message = str(info.value)
    assert "sam2.1_hiera_tiny.pt" in message and "ConnectError: [Errno 111]" in message


def test_download_file_passes_only_keywords_every_release_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    target = tmp_path / "sam2.1_hiera_tiny.pt"

    def hf_hub_download(  # 1.x / 2.x: keyword-only, no resume_download and friends
        repo_id: str,
        filename: str,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ) -> str:
        calls.append(((repo_id, filename), dict(revision=revision, cache_dir=cache_dir)))
        assert local_files_only is True
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    got = hub.download_file(
        "facebook/sam2.1-hiera-tiny",
        "sam2.1_hiera_tiny.pt",
        revision="main",
        cache_dir=str(tmp_path),
        local_files_only=True,
    )
    assert got == target
    assert calls == [
        (
            ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt"),
            dict(revision="main", cache_dir=str(tmp_path)),
        )
    ]


def test_offline_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.offline_by_default() is True
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub.offline_by_default() is False
    monkeypatch.delattr(constants, "HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "is_offline_mode", lambda: True, raising=False)
    assert hub.offline_by_default() is True


def test_closed_client_of_hub_1_0_to_1_2_is_an_unreachable_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub 1.0-1.2 retry a refused connection with the client they just closed."""
    errors: list[str] = ["Cannot send a request, as the client has been closed."]

    def hf_hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        raise RuntimeError(errors[0])

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(CheckpointUnavailableError) as info:
        download_checkpoint("facebook/sam2.1-hiera-small")
    message = str(info.value)
    assert "sam2.1_hiera_small.pt" in message and "the hub could not be reached" in message
    errors[0] = "some other failure"
    with pytest.raises(RuntimeError, match="some other failure"):
        download_checkpoint("facebook/sam2.1-hiera-small")
