"""Shared test set-up."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

STUBS = str(Path(__file__).parent / "_stubs")


def _ask_transformers_without_stub(import_utils: ModuleType) -> None:
    """Cache ``False`` as transformers' answer to "is torchvision installed?".

    The check (``transformers.utils.import_utils.is_torchvision_available``, an
    ``lru_cache``) only asks ``importlib.util.find_spec("torchvision")``, which finds the
    stand-in; transformers' image utilities then fail on names the stand-in lacks. So it is
    answered once with the stand-in hidden from sys.path and sys.modules; the cache keeps
    that answer for the session.
    """
    stub_modules = {k: v for k, v in sys.modules.items() if k.partition(".")[0] == "torchvision"}
    index = sys.path.index(STUBS)
    del sys.path[index]
    for name in stub_modules:
        del sys.modules[name]
    try:
        import_utils.is_torchvision_available.cache_clear()
        import_utils.is_torchvision_available()
    finally:
        sys.path.insert(index, STUBS)
        sys.modules.update(stub_modules)


class _OnTransformersImport(importlib.abc.MetaPathFinder):
    """One-shot import hook: once ``transformers.utils.import_utils`` has run, and before the
    rest of transformers asks it anything, apply ``_ask_transformers_without_stub`` to it.

    A hook rather than an import here, so sessions that never use transformers do not pay
    for importing it.
    """

    target = "transformers.utils.import_utils"

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.target:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_then_answer(module: ModuleType) -> None:
                exec_module(module)
                _ask_transformers_without_stub(module)

            spec.loader.exec_module = exec_then_answer  # type: ignore[method-assign]
        return spec


# The reference `sam2` package imports three torchvision transforms and its NMS helpers; no
# torchvision wheel works with the CPU torch used here, so the tests provide a stand-in. It
# must not make transformers (used by the transformers-format tests) think torchvision is
# installed: see `_ask_transformers_without_stub`.
if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, STUBS)
    if _OnTransformersImport.target in sys.modules:
        _ask_transformers_without_stub(sys.modules[_OnTransformersImport.target])
    elif importlib.util.find_spec("transformers") is not None:
        sys.meta_path.insert(0, _OnTransformersImport())


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
