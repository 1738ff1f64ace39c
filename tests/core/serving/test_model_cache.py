"""The shared model cache: key normalisation, load-once under threads, views and helpers."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.build import build_sam2
from sam2ui.core.loading.devices import resolve_device
from sam2ui.core.modeling import SAM2Model
from sam2ui.core.modeling.config import get_config
from sam2ui.core.serving.model_cache import (
    ModelCache,
    ModelKey,
    default_model_cache,
    image_predictor,
    model_nbytes,
    video_predictor,
)

TINY = replace(get_config("sam2.1-hiera-tiny"), image_size=256)


@pytest.fixture(scope="module")
def tiny_model() -> SAM2Model:
    torch.manual_seed(0)
    return build_sam2(TINY)


class CountingLoader:
    """Returns ``model`` (or a fresh stand-in per key) and counts calls per key."""

    def __init__(self, model: SAM2Model, delay: float = 0.0) -> None:
        self.model = model
        self.delay = delay
        self.calls: list[ModelKey] = []
        self._lock = threading.Lock()

    def __call__(self, key: ModelKey) -> SAM2Model:
        with self._lock:
            self.calls.append(key)
        time.sleep(self.delay)
        return self.model


def test_variant_alias_and_hub_id_share_one_key() -> None:
    keys = {
        ModelCache.key(name, "cpu", dtype)
        for name in ("sam2.1-hiera-tiny", "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_t")
        for dtype in ("float32", "fp32", torch.float32)
    }
    assert keys == {ModelKey("facebook/sam2.1-hiera-tiny", "cpu", "float32")}
    assert ModelCache.key("sam2.1-hiera-tiny", "cpu", "bf16").dtype == "bfloat16"
    auto = ModelCache.key("sam2.1-hiera-tiny", None).device
    assert auto == ModelCache.key("sam2.1-hiera-tiny", resolve_device(None)).device
    assert auto.split(":")[0] == resolve_device(None).type
    # A variant matching the hub id is redundant; a different one is an error.
    assert ModelCache.key("sam2.1-hiera-tiny", "cpu", variant="sam2.1_hiera_t").variant is None
    with pytest.raises(ValueError, match="not sam2-hiera-large"):
        ModelCache.key("sam2.1-hiera-tiny", "cpu", variant="sam2-hiera-large")


def test_every_name_of_one_cuda_device_shares_one_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CUDA machine "auto", "cuda" and "cuda:N" of the current device are one model."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    devices = {
        ModelCache.key("sam2.1-hiera-tiny", device).device
        for device in (None, "auto", "cuda", "cuda:1", torch.device("cuda", 1))
    }
    assert devices == {"cuda:1"}
    assert ModelCache.key("sam2.1-hiera-tiny", "cuda:0").device == "cuda:0"
    assert ModelCache.key("sam2.1-hiera-tiny", "cpu").device == "cpu"


def test_local_path_is_keyed_by_resolved_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    relative = ModelCache.key("weights.pt", "cpu")
    assert relative == ModelCache.key(ckpt, "cpu") == ModelCache.key(str(ckpt), "cpu")
    assert relative.source == str(ckpt.resolve())
    forced = ModelCache.key("weights.pt", "cpu", variant="sam2.1_hiera_t")
    assert forced.variant == "sam2.1-hiera-tiny" and forced != relative


def test_get_model_loads_once_and_shares(tiny_model: SAM2Model) -> None:
    loader = CountingLoader(tiny_model)
    cache = ModelCache(loader)
    first = cache.get_model("sam2.1-hiera-tiny", "cpu")
    again = cache.get_model("facebook/sam2.1-hiera-tiny", "cpu", torch.float32)
    assert first is again is tiny_model
    assert loader.calls == [ModelKey("facebook/sam2.1-hiera-tiny", "cpu", "float32")]
    cache.get_model("sam2.1-hiera-tiny", "cpu", "bfloat16")
    assert len(loader.calls) == 2 and len(cache) == 2


def test_concurrent_first_requests_load_once(tiny_model: SAM2Model) -> None:
    loader = CountingLoader(tiny_model, delay=0.05)
    cache = ModelCache(loader)
    results: list[SAM2Model] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_model("sam2.1-hiera-tiny", "cpu")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loader.calls) == 1
    assert len(results) == 8 and all(m is tiny_model for m in results)


def test_different_keys_load_in_parallel(tiny_model: SAM2Model) -> None:
    barrier = threading.Barrier(2, timeout=5)

    def loader(key: ModelKey) -> SAM2Model:
        barrier.wait()  # breaks (BrokenBarrierError) if the two loads were serialised
        return tiny_model

    cache = ModelCache(loader)
    errors: list[BaseException] = []

    def get(dtype: str) -> None:
        try:
            cache.get_model("sam2.1-hiera-tiny", "cpu", dtype)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=get, args=(d,)) for d in ("float32", "bfloat16")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(cache) == 2


def test_failed_load_is_not_cached(tiny_model: SAM2Model) -> None:
    attempts = []

    def loader(key: ModelKey) -> SAM2Model:
        attempts.append(key)
        if len(attempts) == 1:
            raise RuntimeError("disk hiccup")
        return tiny_model

    cache = ModelCache(loader)
    with pytest.raises(RuntimeError, match="disk hiccup"):
        cache.get_model("sam2.1-hiera-tiny", "cpu")
    assert len(cache) == 0
    assert cache.get_model("sam2.1-hiera-tiny", "cpu") is tiny_model
    assert len(attempts) == 2


def test_loaded_evict_and_clear(tiny_model: SAM2Model) -> None:
    cache = ModelCache(CountingLoader(tiny_model))
    cache.get_model("sam2.1-hiera-tiny", "cpu")
    cache.get_video_model("sam2.1-hiera-tiny", "cpu", "bf16")
    expected = sum(p.numel() * p.element_size() for p in tiny_model.parameters()) + sum(
        b.numel() * b.element_size() for b in tiny_model.buffers()
    )
    infos = cache.loaded()
    assert [i.key.dtype for i in infos] == ["float32", "bfloat16"]
    assert [i.has_video_view for i in infos] == [False, True]
    assert infos[0].parameter_bytes == model_nbytes(tiny_model) == expected > 1_000_000
    assert cache.evict(infos[0].key) is True
    assert cache.evict(infos[0].key) is False
    assert infos[0].key not in cache and infos[1].key in cache
    cache.clear()
    assert cache.loaded() == []


def test_video_view_shares_weights_with_its_own_config(tiny_model: SAM2Model) -> None:
    cache = ModelCache(CountingLoader(tiny_model))
    model = cache.get_model("sam2.1-hiera-tiny", "cpu")
    view = cache.get_video_model("sam2.1-hiera-tiny", "cpu")
    assert view is not model
    assert cache.get_video_model("facebook/sam2.1-hiera-tiny", "cpu") is view
    assert view.config.binarize_mask_from_pts_for_mem_enc is True
    assert model.config.binarize_mask_from_pts_for_mem_enc is False  # shared model untouched
    assert replace(view.config, binarize_mask_from_pts_for_mem_enc=False) == model.config
    pairs = zip(model.parameters(), view.parameters())
    assert all(a is b for a, b in pairs)
    assert view.image_encoder is model.image_encoder
    assert len(cache.loaded()) == 1


def test_predictor_helpers_use_the_shared_model(tiny_model: SAM2Model) -> None:
    loader = CountingLoader(tiny_model)
    cache = ModelCache(loader)
    a = image_predictor("sam2.1-hiera-tiny", device="cpu", cache=cache, mask_threshold=0.5)
    b = image_predictor("sam2.1_hiera_t", device="cpu", cache=cache)
    assert isinstance(a, SAM2ImagePredictor) and a is not b
    assert a.model is b.model is tiny_model and a.mask_threshold == 0.5
    v = video_predictor("sam2.1-hiera-tiny", device="cpu", cache=cache, fill_hole_area=0)
    assert v.model.config.binarize_mask_from_pts_for_mem_enc is True
    assert v.model.image_encoder is tiny_model.image_encoder and v.fill_hole_area == 0
    assert len(loader.calls) == 1
    # Each image predictor keeps its own embedding on the shared model.
    a.set_image(np.zeros((32, 48, 3), np.uint8))
    assert a.is_image_set and not b.is_image_set


def test_predictor_helpers_pass_ready_predictors_through(tiny_model: SAM2Model) -> None:
    loader = CountingLoader(tiny_model)
    cache = ModelCache(loader)
    image = image_predictor("sam2.1-hiera-tiny", device="cpu", cache=cache)
    video = video_predictor("sam2.1-hiera-tiny", device="cpu", cache=cache)
    assert image_predictor(image, device="cpu", cache=cache) is image
    assert video_predictor(video, cache=cache) is video
    assert len(loader.calls) == 1 and len(cache) == 1
    message = "model must be a variant name, a hub id, a checkpoint path or a "
    with pytest.raises(TypeError) as err:
        image_predictor(3, cache=cache)  # type: ignore[arg-type]
    assert str(err.value) == message + "SAM2ImagePredictor, got int"
    with pytest.raises(TypeError) as err:
        video_predictor(image, cache=cache)  # type: ignore[arg-type]
    assert str(err.value) == message + "SAM2VideoPredictor, got SAM2ImagePredictor"
    assert len(loader.calls) == 1


def test_default_cache_is_process_wide() -> None:
    assert default_model_cache() is default_model_cache()
    assert isinstance(default_model_cache(), ModelCache)
