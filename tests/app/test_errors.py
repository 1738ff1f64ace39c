"""What a browser is told when something fails: our own sentences, never the server's
internals; and a model whose weights cannot be had is retried in the background."""

from __future__ import annotations

import logging
import time

import gradio as gr
import pytest

from sam2ui.app import errors
from sam2ui.app.context import AppContext, UserError
from sam2ui.app.image_handlers import ImageHandlers
from sam2ui.app.options import AppConfig
from sam2ui.app.parts import guard
from sam2ui.app.ui import build_demo
from sam2ui.cli import build_parser
from sam2ui.core import CheckpointUnavailableError, ModelCache
from sam2ui.core.annotate.objects import check_click
from tests.app.conftest import make_image


def test_scrub_keeps_names_and_drops_folders_and_errnos() -> None:
    text = "Cannot use this image: [Errno 21] Is a directory: '/tmp/gradio/0a1b/pic.png'."
    assert errors.scrub(text) == "Cannot use this image: Is a directory: 'pic.png'."
    assert errors.scrub(r"not found: C:\Users\me\clip.mp4") == "not found: clip.mp4"
    assert errors.scrub("1/2 of https://huggingface.co/facebook") == (
        "1/2 of https://huggingface.co/facebook"
    )


def test_expected_failures_keep_their_words_and_others_are_generic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert errors.error_message(UserError("Type a name first.")) == "Type a name first."
    try:
        check_click(5.0, float("nan"), 10, 10)
    except ValueError as err:  # raised by sam2ui: a sentence written for people
        ours = err
    assert "must be finite" in errors.error_message(ours)
    try:
        int("twelve")
    except ValueError as err:  # raised by a library: not ours to show
        theirs = err
    with caplog.at_level(logging.ERROR, logger="sam2ui.app.errors"):
        assert errors.error_message(theirs, "on_click") == errors.GENERIC
        failure = OSError(2, "No such file or directory", "/srv/models/private.pt")
        assert errors.error_message(failure, "on_upload") == errors.GENERIC
        assert errors.error_message(RuntimeError("CUDA out of memory")) == errors.GENERIC
    assert errors.GENERIC == "Something went wrong on the server; your work is kept. Try again."
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 3 and logged[0].exc_info is not None  # the traceback, server side
    assert "on_click" in logged[0].getMessage()


def test_guard_turns_failures_into_clean_gradio_errors() -> None:
    def broken(path: str) -> None:
        open(path)  # noqa: SIM115 (fails)

    def told(_: str) -> None:
        raise gr.Error("Open /srv/sam2ui/secret/file.png first.")

    with pytest.raises(gr.Error) as info:
        guard(broken)("/srv/sam2ui/missing/file.png")
    assert info.value.message == errors.GENERIC and info.value.print_exception is False
    with pytest.raises(gr.Error) as info:
        guard(told)("x")
    assert info.value.message == "Open file.png first."
    assert guard(broken).sam2ui_guarded and guard(told).__name__ == "told"


def test_every_event_handler_is_guarded_and_analytics_are_off(
    small_cache: ModelCache,
) -> None:
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", port=None)
    demo = build_demo(config, cache=small_cache)
    try:
        fns = list(demo.fns.values())
        assert len(fns) >= 36
        unguarded = [f.name for f in fns if not getattr(f.fn, "sam2ui_guarded", False)]
        assert unguarded == []
        assert demo.analytics_enabled is False
    finally:
        demo.sam2ui_context.close()
    args = build_parser().parse_args(["app", "--gradio-analytics"])
    assert args.gradio_analytics is True
    assert build_parser().parse_args(["app"]).gradio_analytics is False


def test_the_banner_names_the_model_never_its_path(tmp_path) -> None:
    checkpoint = tmp_path / "private" / "weights.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"not a checkpoint")

    def loader(key: object) -> None:
        raise ValueError(f"{checkpoint} is not a SAM 2 checkpoint")

    context = AppContext(AppConfig(model=str(checkpoint)), cache=ModelCache(loader))
    assert context.load_model() is False
    assert context.model_error is not None
    assert "weights.pt" in context.model_error and str(tmp_path) not in context.model_error
    context.close()


def test_offline_weights_are_retried_in_the_background(app_config: AppConfig, small_cache) -> None:
    calls: list[object] = []
    online = False

    def loader(key: object) -> object:
        calls.append(key)
        if not online:
            raise CheckpointUnavailableError(
                "cannot get sam2.1_hiera_tiny.pt of facebook/sam2.1-hiera-tiny: it is not in "
                "/srv/hf-cache/hub and the hub could not be reached. Download it "
                "where the hub is reachable with `hf download facebook/sam2.1-hiera-tiny "
                "sam2.1_hiera_tiny.pt`"
            )
        return small_cache.get_model("sam2.1-hiera-tiny", "cpu")

    cache = ModelCache(loader, retry_first_s=3600)  # retries only when woken
    context = AppContext(app_config, cache=cache)
    assert context.load_model() is False and len(calls) == 1
    banner = context.model_error
    assert (
        banner is not None
        and "/srv" not in banner
        and "hf-cache" not in banner
        and "sam2.1-hiera-tiny" in banner
    )
    assert "`hf download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt`" in banner
    h = ImageHandlers(context)
    for _ in range(3):  # each action is told at once; nobody waits on the hub again
        with pytest.raises(UserError) as info:
            h.upload(None, make_image())
        assert str(info.value) == banner
    assert context.model_banner() == banner and len(calls) == 1

    online = True
    cache.retry_now()
    deadline = time.monotonic() + 300  # only stops a broken test from hanging
    while not cache.loaded():
        assert time.monotonic() < deadline, "the background retry never loaded the model"
        time.sleep(0.02)
    assert len(calls) == 2
    session, view = h.upload(None, make_image())
    assert session and view.message.startswith("128 x 96 image")
    assert context.model_error is None and context.model_banner() is None
    context.close()
