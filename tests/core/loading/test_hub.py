"""Hub downloads through a fake Hugging Face cache (no network is used)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from sam2ui.core.loading.checkpoint import load_sam2, read_state_dict
from sam2ui.core.loading.hub import CheckpointUnavailableError, download_checkpoint, hub_files

TINY_ID = "facebook/sam2.1-hiera-tiny"
SHA = "0123456789abcdef0123456789abcdef01234567"


def make_cache(root: Path, repo_id: str, files: dict[str, Path | bytes], sha: str = SHA) -> Path:
    """Lay out ``files`` as huggingface_hub stores a downloaded snapshot of ``repo_id``."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = snapshot / name
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, meta_checkpoint) -> Path:
    """A cache holding Meta's file for sam2.1-hiera-tiny only, with the hub switched off."""
    cache = tmp_path / "hub"
    make_cache(cache, TINY_ID, {"sam2.1_hiera_tiny.pt": meta_checkpoint("sam2.1-hiera-tiny")})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_files() -> None:
    assert hub_files(TINY_ID) == ["sam2.1_hiera_tiny.pt"]
    assert hub_files("facebook/sam2-hiera-base-plus") == ["sam2_hiera_base_plus.pt"]
    assert hub_files("sam2-hiera-large", "transformers") == ["config.json", "model.safetensors"]
    with pytest.raises(ValueError, match="layout must be"):
        hub_files(TINY_ID, "onnx")  # type: ignore[arg-type]


def test_load_sam2_from_cached_hub_id(offline_cache: Path, meta_checkpoint) -> None:
    path = download_checkpoint(TINY_ID)
    assert path.name == "sam2.1_hiera_tiny.pt"
    assert path.parent == offline_cache / "models--facebook--sam2.1-hiera-tiny" / "snapshots" / SHA
    expected, _ = read_state_dict(meta_checkpoint("sam2.1-hiera-tiny"))
    for source in (TINY_ID, "sam2.1-hiera-tiny"):
        model = load_sam2(source)
        assert model.config.name == "sam2.1-hiera-tiny"
        loaded = model.state_dict()
        assert torch.equal(loaded["no_obj_embed_spatial"], expected["no_obj_embed_spatial"])


def test_revision_is_passed_through(offline_cache: Path) -> None:
    assert download_checkpoint(TINY_ID, revision=SHA).parent.name == SHA
    with pytest.raises(CheckpointUnavailableError, match="--revision v9"):
        download_checkpoint(TINY_ID, revision="v9")


def test_uncached_offline_gives_helpful_error(offline_cache: Path) -> None:
    with pytest.raises(CheckpointUnavailableError) as info:
        load_sam2("facebook/sam2-hiera-small")
    message = str(info.value)
    assert "facebook/sam2-hiera-small" in message and "sam2_hiera_small.pt" in message
    assert "hf download facebook/sam2-hiera-small sam2_hiera_small.pt" in message
    assert "HF_HUB_OFFLINE" in message and str(offline_cache) in message
    assert "local path" in message


def test_unreachable_hub_gives_helpful_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # A closed local port: the connection is refused at once, nothing leaves the machine.
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}",
    )
    # huggingface_hub retries with exponential back-off; skip the waiting, keep the retries.
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http.time, "sleep", lambda seconds: None)
    with pytest.raises(CheckpointUnavailableError) as info:
        download_checkpoint("facebook/sam2.1-hiera-small")
    message = str(info.value)
    assert "sam2.1_hiera_small.pt" in message and "could not be reached" in message


def test_transformers_layout_and_hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cache(
        tmp_path / "home" / "hub",
        "facebook/sam2-hiera-large",
        {"config.json": b"{}", "model.safetensors": b"weights"},
    )
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    directory = download_checkpoint("facebook/sam2-hiera-large", layout="transformers")
    assert directory.name == SHA
    assert (directory / "config.json").read_bytes() == b"{}"
    assert (directory / "model.safetensors").read_bytes() == b"weights"
    with pytest.raises(CheckpointUnavailableError, match="sam2_hiera_large.pt"):
        download_checkpoint("facebook/sam2-hiera-large")  # Meta's file is not cached


def test_unknown_hub_id() -> None:
    with pytest.raises(ValueError, match="not one of the official SAM 2 hub repositories"):
        download_checkpoint("someone/sam2-finetune")
    with pytest.raises(ValueError, match="neither an existing file or directory"):
        load_sam2("someone/sam2-finetune")


@pytest.fixture
def closed_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub endpoint on a closed local port, the probe's memory cleared, no proxy."""
    from sam2ui.core.loading import reach

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    reach.forget()
    yield
    reach.forget()


def test_an_unreachable_hub_fails_in_about_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_endpoint: None
) -> None:
    import time

    from huggingface_hub import constants

    from sam2ui.core.loading import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    asked: list[bool] = []
    real = hub.download_file

    def record(*args: object, **kwargs: object) -> Path:
        asked.append(bool(kwargs.get("local_files_only")))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hub, "download_file", record)
    start = time.perf_counter()
    with pytest.raises(CheckpointUnavailableError) as info:
        download_checkpoint("facebook/sam2.1-hiera-small")
    assert time.perf_counter() - start < 3.0
    assert asked == [True]  # the cache only: no request, so no retries
    assert "no connection to 127.0.0.1 within 1 s" in str(info.value)


def test_cached_checkpoints_load_without_a_network(
    offline_cache: Path, monkeypatch: pytest.MonkeyPatch, closed_endpoint: None
) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    path = download_checkpoint(TINY_ID)
    assert path.name == "sam2.1_hiera_tiny.pt" and path.is_file()


def test_the_probe(monkeypatch: pytest.MonkeyPatch, closed_endpoint: None) -> None:
    import socket
    import time

    from sam2ui.core.loading import reach

    assert reach.hub_host() == ("127.0.0.1", 9)
    assert reach.hub_reachable() is False
    # a listening port answers
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert reach.hub_reachable() is True
    # a host that hangs is given up after the timeout
    reach.forget()
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(3))
    start = time.perf_counter()
    assert reach.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - start < 1.0
    # behind a proxy the host is not probed
    reach.forget()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert reach.hub_reachable() is True
