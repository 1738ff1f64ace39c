"""Shared test set-up."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

STUBS = str(Path(__file__).parent / "_stubs")


def _pin_transformers_torchvision_check() -> None:
    """Have transformers record "torchvision is not installed" before the stand-in exists.

    Its check (``is_torchvision_available``, an ``lru_cache``) only asks whether the module can
    be found, so after the stand-in is on sys.path it would answer yes and transformers' image
    utilities would then fail on names the stand-in lacks. Asked first, the cached answer stays
    no for the session. Costs one light import when transformers is installed.
    """
    try:
        from transformers.utils import import_utils
    except ImportError:
        return
    import_utils.is_torchvision_available()


# The reference `sam2` package imports three torchvision transforms and its NMS helpers; no
# torchvision wheel works with the CPU torch used here, so the tests provide a stand-in.
if importlib.util.find_spec("torchvision") is None:
    _pin_transformers_torchvision_check()
    sys.path.insert(0, STUBS)


@pytest.fixture(scope="session")
def meta_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``meta_checkpoint(variant, seed=0) -> Path`` to a random-weight Meta ``.pt``.

    Each (variant, seed) is built once per test session and shared by every test.
    """
    from tests.reference_models import make_meta_checkpoint

    cache: dict[tuple[str, int], Path] = {}
    root = tmp_path_factory.mktemp("meta_checkpoints")

    def factory(variant: str, seed: int = 0) -> Path:
        key = (variant, seed)
        if key not in cache:
            cache[key] = make_meta_checkpoint(variant, root / f"{variant}-{seed}", seed=seed)
        return cache[key]

    return factory
