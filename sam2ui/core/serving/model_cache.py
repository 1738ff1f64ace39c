"""One loaded SAM 2 model per (source, device, dtype), shared by every predictor and user.

The Gradio app, the notebook widgets and the command line all ask this cache for models, so a
checkpoint is read and held in memory once however many browser tabs or widgets use it.
Predictors are cheap wrappers around a model; :func:`image_predictor` and
:func:`video_predictor` make them on the shared model. They are the one place where a "model"
argument (a variant name, hub id or checkpoint path, or a ready predictor) becomes a predictor.

Cache keys are normalised (:meth:`ModelCache.key`): a variant name, its short alias and its hub
id (``"sam2.1-hiera-tiny"``, ``"sam2.1_hiera_t"``, ``"facebook/sam2.1-hiera-tiny"``) are one
key; a local checkpoint is keyed by its resolved absolute path; ``device=None`` is resolved
(cuda, then mps, then cpu) before keying and ``dtype`` is keyed by its canonical name.

Video models. The video predictor wants ``binarize_mask_from_pts_for_mem_enc=True`` (see
:meth:`SAM2VideoPredictor.from_pretrained`), which the image path never reads (only
:mod:`sam2ui.core.modeling.tracking` does). A model with a different config is a different
model, so the shared model's config is never changed in place; but loading the weights twice
would double the memory for nothing. :meth:`ModelCache.get_video_model` therefore returns a
*config view*: a shallow copy of the cached model that shares every parameter, buffer and
submodule with it and differs only in ``config``. It is made once per key, counted with its
model in :meth:`ModelCache.loaded`, and dropped with it by :meth:`ModelCache.evict`.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.devices import resolve_device, resolve_dtype
from sam2ui.core.loading.hub import CheckpointUnavailableError
from sam2ui.core.modeling import SAM2Model
from sam2ui.core.modeling.config import get_config

from .handoff import share

if TYPE_CHECKING:
    from sam2ui.core.video.predictor import SAM2VideoPredictor

__all__ = [
    "ModelCache",
    "ModelInfo",
    "ModelKey",
    "default_model_cache",
    "image_predictor",
    "video_predictor",
]

Source = str | os.PathLike[str]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model.

    Attributes:
        source: the official hub id (``"facebook/sam2.1-hiera-tiny"``) or the resolved absolute
            path of a local checkpoint.
        device: a concrete device string (``"cpu"``, ``"cuda:0"``, ``"mps"``).
        dtype: ``"float32"`` or ``"bfloat16"``.
        variant: the variant forced for a local checkpoint (``None`` when the checkpoint or the
            hub id names it).
    """

    source: str
    device: str
    dtype: str
    variant: str | None = None

    def __str__(self) -> str:
        variant = f", variant={self.variant}" if self.variant else ""
        return f"{self.source} [{self.device}, {self.dtype}{variant}]"


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model: its key and the bytes its parameters and buffers take."""

    key: ModelKey
    parameter_bytes: int
    has_video_view: bool


Loader = Callable[[ModelKey], SAM2Model]


def load_model(key: ModelKey) -> SAM2Model:
    """The default loader: :func:`~sam2ui.core.loading.checkpoint.load_sam2` for ``key``."""
    from sam2ui.core.loading.checkpoint import load_sam2

    return load_sam2(
        key.source, variant=key.variant, device=key.device, dtype=resolve_dtype(key.dtype)
    )


def model_nbytes(model: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each storage counted once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for tensor in (*model.parameters(), *model.buffers()):
        storage = tensor.untyped_storage()
        ident = (str(tensor.device), storage.data_ptr())
        if ident not in seen:
            seen.add(ident)
            total += storage.nbytes()
    return total


def video_config_view(model: SAM2Model) -> SAM2Model:
    """``model`` as the video predictor wants it, sharing all weights with ``model``.

    Returns ``model`` itself when its config already binarises masks from clicks for the memory
    encoder; otherwise a shallow copy whose ``config`` has the flag set. The copy shares the
    parameter, buffer and submodule dicts, so it costs no tensor memory.
    """
    if model.config.binarize_mask_from_pts_for_mem_enc:
        return model
    view = copy.copy(model)
    view.config = replace(model.config, binarize_mask_from_pts_for_mem_enc=True)
    return view


def _normalise_source(source: Source) -> tuple[str, bool]:
    """(key text, whether it is an official hub id) for ``source``; see :class:`ModelKey`."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if not isinstance(source, os.PathLike) and not path.exists():
        try:
            return get_config(text).hub_id, True
        except ValueError:
            pass
    return str(path.resolve()), False


def _normalise_device(device: str | torch.device | None) -> str:
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)


class ModelCache:
    """Thread-safe cache of loaded models, one per :class:`ModelKey`.

    Concurrent first requests for one key load it once (a per-key lock); different keys load
    in parallel. ``loader`` builds a model for a key (default :func:`load_model`); tests pass
    one that builds a small random-weight model.

    Weights that can be neither found nor downloaded (:class:`CheckpointUnavailableError`:
    offline, hub down) are a remembered failure: later requests for the key raise it again
    at once instead of waiting for the hub (about 25 s a try), and a daemon thread retries
    the load in the background, ``retry_first_s`` after the failure and then at doubling
    intervals up to ``retry_max_s``, until it succeeds (the model is then there for the next
    request), the key is evicted or the cache cleared. :meth:`retry_now` wakes it early.
    """

    def __init__(
        self,
        loader: Loader | None = None,
        *,
        retry_first_s: float = 5.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self._loader: Loader = loader if loader is not None else load_model
        self._lock = threading.Lock()  # guards the dicts below, never held while loading
        self._key_locks: dict[ModelKey, threading.Lock] = {}
        self._models: dict[ModelKey, SAM2Model] = {}
        self._video_views: dict[ModelKey, SAM2Model] = {}
        self._retry = (float(retry_first_s), float(retry_max_s))
        self._failures: dict[ModelKey, _Failure] = {}

    @staticmethod
    def key(
        source: Source,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = "float32",
        variant: str | None = None,
    ) -> ModelKey:
        """The normalised cache key of a request (see the module docstring).

        Raises ``ValueError`` for an unknown variant, device or dtype, and ``RuntimeError``
        for a device that is not available.
        """
        text, is_hub = _normalise_source(source)
        canonical_variant = get_config(variant).name if variant is not None else None
        if is_hub and canonical_variant is not None:
            if canonical_variant != get_config(text).name:
                raise ValueError(f"{source!s} is {get_config(text).name}, not {variant}")
            canonical_variant = None  # the hub id already names it
        dtype_name = str(resolve_dtype(dtype)).removeprefix("torch.")
        return ModelKey(text, _normalise_device(device), dtype_name, canonical_variant)

    def get_model(
        self,
        source: Source,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = "float32",
        *,
        variant: str | None = None,
    ) -> SAM2Model:
        """The shared model for this request, loading it on first use.

        ``source`` is a hub id, a variant name or a local checkpoint path (see
        :func:`~sam2ui.core.loading.checkpoint.load_sam2`). Do not modify the returned model (its
        config, dtype or device): every user of the key shares it.
        """
        return self.get_model_by_key(self.key(source, device, dtype, variant))

    def get_model_by_key(self, key: ModelKey) -> SAM2Model:
        """The shared model for a normalised ``key``, loading it on first use (a remembered
        failure to get its weights is raised at once; see the class docstring)."""
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                return model
            _raise_remembered(self._failures.get(key))
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                model = self._models.get(key)
                if model is None:  # a load that failed while this one waited: no second try
                    _raise_remembered(self._failures.get(key))
            if model is not None:  # another thread loaded it while this one waited
                return model
            try:
                return self._load(key)
            except CheckpointUnavailableError as err:
                self._remember(key, err)
                raise

    def _load(self, key: ModelKey) -> SAM2Model:
        """Run the loader for ``key`` (its key lock held) and keep the model."""
        model = self._loader(key)
        if not isinstance(model, SAM2Model):
            raise TypeError(f"the loader returned {type(model).__name__}, not a SAM2Model")
        with self._lock:
            self._models[key] = share(model)
            self._failures.pop(key, None)
        return model

    def _remember(self, key: ModelKey, err: CheckpointUnavailableError) -> None:
        """Keep ``err`` for ``key`` and start its background retries (once)."""
        with self._lock:
            if key in self._failures:
                self._failures[key].error = err
                return
            failure = self._failures[key] = _Failure(err)
        thread = threading.Thread(
            target=self._retry_loop, args=(key, failure), name="sam2ui-model-retry", daemon=True
        )
        failure.thread = thread
        thread.start()

    def _retry_loop(self, key: ModelKey, failure: _Failure) -> None:
        delay, longest = self._retry
        while True:
            failure.wake.wait(delay)
            failure.wake.clear()
            with self._lock:
                if self._failures.get(key) is not failure:  # evicted or cleared meanwhile
                    return
                key_lock = self._key_locks.setdefault(key, threading.Lock())
            with key_lock:
                try:
                    self._load(key)
                except CheckpointUnavailableError as err:
                    failure.error = err
                    failure.tries += 1
                except Exception:  # a different failure: log it and keep trying
                    log.exception("retrying the model %s failed", key)
                    failure.tries += 1
                else:
                    log.info("the model %s is available now", key)
                    return
            delay = min(max(delay, 0.5) * 2, longest)

    def failing(self) -> dict[ModelKey, str]:
        """The keys whose weights could not be had, with the last reason (retried in the
        background)."""
        with self._lock:
            return {key: str(f.error) for key, f in self._failures.items()}

    def retry_now(self) -> None:
        """Wake the background retries of every failing key now."""
        with self._lock:
            failures = list(self._failures.values())
        for failure in failures:
            failure.wake.set()

    def get_video_model(
        self,
        source: Source,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = "float32",
        *,
        variant: str | None = None,
    ) -> SAM2Model:
        """The shared model configured for video (see the module docstring), loading it on
        first use. It shares all weights with :meth:`get_model`'s model for the same key."""
        key = self.key(source, device, dtype, variant)
        model = self.get_model_by_key(key)
        with self._lock:
            view = self._video_views.get(key)
            if view is None or self._models.get(key) is not model:
                view = share(video_config_view(model))
                if self._models.get(key) is model:  # not evicted meanwhile
                    self._video_views[key] = view
            return view

    def loaded(self) -> list[ModelInfo]:
        """The loaded models, in load order."""
        with self._lock:
            items = list(self._models.items())
            views = set(self._video_views)
        return [ModelInfo(key, model_nbytes(model), key in views) for key, model in items]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def evict(self, key: ModelKey) -> bool:
        """Drop the cache's references to ``key``'s model (and its video view); whether it was
        loaded. Predictors made on it keep working: they hold their own reference."""
        with self._lock:
            self._video_views.pop(key, None)
            self._key_locks.pop(key, None)
            failure = self._failures.pop(key, None)
            if failure is not None:
                failure.wake.set()  # its thread sees it is gone and ends
            return self._models.pop(key, None) is not None

    def clear(self) -> None:
        """Drop every model."""
        with self._lock:
            self._models.clear()
            self._video_views.clear()
            self._key_locks.clear()
            failures = list(self._failures.values())
            self._failures.clear()
        for failure in failures:
            failure.wake.set()


class _Failure:
    """A key whose weights could not be had: the last error and its retry thread."""

    def __init__(self, error: CheckpointUnavailableError) -> None:
        self.error = error
        self.tries = 0
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None


def _raise_remembered(failure: _Failure | None) -> None:
    """Raise a fresh copy of a remembered failure (one exception object raised by many
    threads would collect all their tracebacks)."""
    if failure is not None:
        raise copy.copy(failure.error) from None


_default_cache: ModelCache | None = None
_default_lock = threading.Lock()


def default_model_cache() -> ModelCache:
    """The process-wide cache that the app, the widgets and the command line share."""
    global _default_cache
    with _default_lock:
        if _default_cache is None:
            _default_cache = ModelCache()
        return _default_cache


def _check_source(source: object, wanted: str) -> None:
    """TypeError unless ``source`` names a model (a predictor was handled by the caller)."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"model must be a variant name, a hub id, a checkpoint path or a {wanted}, "
            f"got {type(source).__name__}"
        )


def image_predictor(
    source: Source | SAM2ImagePredictor,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = "float32",
    variant: str | None = None,
    cache: ModelCache | None = None,
    **kwargs: Any,
) -> SAM2ImagePredictor:
    """A new :class:`SAM2ImagePredictor` (its own image embedding) on the shared model.

    ``source`` is a variant name, hub id or local checkpoint path, or a ready
    :class:`SAM2ImagePredictor`, which is returned as it is (the other arguments are then
    ignored); anything else is a TypeError. ``cache`` defaults to
    :func:`default_model_cache`; ``kwargs`` go to the predictor.
    """
    if isinstance(source, SAM2ImagePredictor):
        return source
    _check_source(source, "SAM2ImagePredictor")
    cache = cache if cache is not None else default_model_cache()
    model = cache.get_model(source, device, dtype, variant=variant)
    return SAM2ImagePredictor(model, **kwargs)


def video_predictor(
    source: Source | SAM2VideoPredictor,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = "float32",
    variant: str | None = None,
    cache: ModelCache | None = None,
    **kwargs: Any,
) -> SAM2VideoPredictor:
    """A :class:`SAM2VideoPredictor` on the shared model's video view (see the module
    docstring), or ``source`` itself when it is a ready :class:`SAM2VideoPredictor` (as for
    :func:`image_predictor`). ``cache`` defaults to :func:`default_model_cache`; ``kwargs``
    go to the predictor. Sessions come from its ``init_state``."""
    from sam2ui.core.video.predictor import SAM2VideoPredictor

    if isinstance(source, SAM2VideoPredictor):
        return source
    _check_source(source, "SAM2VideoPredictor")
    cache = cache if cache is not None else default_model_cache()
    model = cache.get_video_model(source, device, dtype, variant=variant)
    return SAM2VideoPredictor(model, **kwargs)
