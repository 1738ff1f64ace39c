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


# ---------------------------------------------------------------------------- browser tests
# Debian's chromium driven by Playwright for Python (Playwright cannot fetch its own browser
# here). scripts/install-test-deps.sh installs both; a missing browser is a failure, not a skip,
# so CI cannot pass without running these tests.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots of failed browser tests land here (kept by CI as test artifacts).
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless Debian chromium (``playwright.sync_api.Browser``) shared by the session."""
    import shutil

    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not installed; run scripts/install-test-deps.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium_browser, request: pytest.FixtureRequest):
    """A fresh page (own context); a screenshot goes to test-artifacts/ if the test fails."""
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        name = request.node.nodeid.replace("/", "_").replace("::", "-")
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # a crashed page: the failure itself is what matters
            print(f"could not save a screenshot: {exc}")
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that drives chromium ``browser``, so that a run can leave them out
    (``-m "not browser"``, as the dependency-matrix jobs do)."""
    for item in items:
        if "chromium_browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
