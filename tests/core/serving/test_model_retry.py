"""A hub that cannot be reached is remembered by the model cache and retried in the background:
no request waits on the hub twice (the download function is counted, nothing is timed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sam2ui.core.loading import hub
from sam2ui.core.loading.hub import CheckpointUnavailableError
from sam2ui.core.modeling import SAM2Model
from sam2ui.core.serving.model_cache import ModelCache, ModelKey, image_predictor

TINY_ID = "facebook/sam2.1-hiera-tiny"


class FakeHub:
    """``download_file`` of a hub that refuses every connection until ``serve`` is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.serve: Path | None = None
        self.lock = threading.Lock()

    def __call__(self, repo_id: str, filename: str, **kwargs: object) -> Path:
        with self.lock:
            self.calls.append(filename)
        if self.serve is None:
            raise OSError("Connection refused")
        return self.serve


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(hub, "download_file", fake)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)  # so the download is tried
    monkeypatch.setattr(hub, "_offline", lambda: False)
    return fake


def wait_for(condition: object, what: str, limit_s: float = 300.0) -> None:
    """Poll ``condition()`` until true; the limit only stops a broken test from hanging."""
    deadline = time.monotonic() + limit_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_an_unreachable_hub_is_asked_once_then_retried_in_the_background(
    fake_hub: FakeHub, meta_checkpoint
) -> None:
    cache = ModelCache(retry_first_s=3600)  # the background retry waits for retry_now()
    key = cache.key(TINY_ID, "cpu")
    with pytest.raises(CheckpointUnavailableError, match="sam2.1_hiera_tiny.pt") as first:
        cache.get_model(TINY_ID, "cpu")
    assert fake_hub.calls == ["sam2.1_hiera_tiny.pt"]

    # Every later request gets the same failure without asking the hub again.
    for _ in range(3):
        with pytest.raises(CheckpointUnavailableError) as again:
            cache.get_model(TINY_ID, "cpu")
        assert str(again.value) == str(first.value) and again.value is not first.value
    with pytest.raises(CheckpointUnavailableError):
        image_predictor(TINY_ID, device="cpu", cache=cache)
    with pytest.raises(CheckpointUnavailableError):
        cache.get_video_model("sam2.1-hiera-tiny", "cpu")
    assert fake_hub.calls == ["sam2.1_hiera_tiny.pt"]
    assert list(cache.failing()) == [key] and "Connection refused" in cache.failing()[key]
    assert len(cache) == 0

    # The hub comes back: the background thread loads the model, nobody waits for it.
    fake_hub.serve = meta_checkpoint("sam2.1-hiera-tiny")
    cache.retry_now()
    wait_for(lambda: key in cache, "the background load")
    assert fake_hub.calls == ["sam2.1_hiera_tiny.pt"] * 2
    assert cache.failing() == {}
    model = cache.get_model(TINY_ID, "cpu")
    assert isinstance(model, SAM2Model) and model.config.name == "sam2.1-hiera-tiny"
    assert len(fake_hub.calls) == 2


def test_a_failing_retry_keeps_the_failure_and_eviction_ends_the_retries(
    fake_hub: FakeHub,
) -> None:
    cache = ModelCache(retry_first_s=3600)
    key = cache.key(TINY_ID, "cpu")
    before = set(threading.enumerate())  # other caches of the test run may retry too
    with pytest.raises(CheckpointUnavailableError):
        cache.get_model(TINY_ID, "cpu")
    retrier = next(
        t for t in threading.enumerate() if t.name == "sam2ui-model-retry" and t not in before
    )
    cache.retry_now()
    wait_for(lambda: len(fake_hub.calls) == 2, "the background retry")
    with pytest.raises(CheckpointUnavailableError):  # still failing, still at once
        cache.get_model(TINY_ID, "cpu")
    assert len(fake_hub.calls) == 2 and key in cache.failing()
    assert retrier.is_alive() and retrier.daemon

    cache.evict(key)  # forgets the failure: its thread ends, and the next request tries again
    retrier.join(60)
    assert not retrier.is_alive() and cache.failing() == {}
    with pytest.raises(CheckpointUnavailableError):
        cache.get_model(TINY_ID, "cpu")
    assert len(fake_hub.calls) == 3
    cache.clear()


def test_other_load_errors_are_not_remembered() -> None:
    calls: list[ModelKey] = []

    def loader(key: ModelKey) -> SAM2Model:
        calls.append(key)
        raise FileNotFoundError("no such checkpoint")

    cache = ModelCache(loader)
    for _ in range(2):
        with pytest.raises(FileNotFoundError):
            cache.get_model("sam2.1-hiera-tiny", "cpu")
    assert len(calls) == 2 and cache.failing() == {}
