"""Shared test set-up."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# The reference `sam2` package imports three torchvision transforms and its NMS helpers; no
# torchvision wheel works with the CPU torch used here, so the tests provide a stand-in.
if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(Path(__file__).parent / "_stubs"))


import pytest


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
