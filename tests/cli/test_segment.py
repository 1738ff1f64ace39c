"""Tests of the ``sam2ui`` command line: argument parsing, error messages, and a full run."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

import sam2ui.core
from sam2ui import __version__
from sam2ui.cli import (
    BOX_COLOR,
    MASK_COLOR,
    NEGATIVE_COLOR,
    POSITIVE_COLOR,
    Box,
    Point,
    main,
    parse_box,
    parse_point,
    render_overlay,
    resolve_device,
)

WIDTH, HEIGHT = 80, 60


def _scene() -> np.ndarray:
    """An 80x60 RGB test image: a bright rectangle and a dark disc on a gradient."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([xs * 3, ys * 4, np.full_like(xs, 60)], axis=-1).astype(np.uint8)
    rgb[15:45, 30:60] = (250, 240, 40)
    rgb[(xs - 15) ** 2 + (ys - 15) ** 2 < 64] = (10, 10, 10)
    return rgb


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(_scene()).save(path)
    return path


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting argparse's usage error; return what it printed to stderr."""
    with pytest.raises(SystemExit) as exc_info:
        main(argv)
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sam2ui")
    return err


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10,20", Point(10.0, 20.0, 1)),
        (" 10.5 , 20 ", Point(10.5, 20.0, 1)),
        ("3,4,1", Point(3.0, 4.0, 1)),
        ("3,4,0", Point(3.0, 4.0, 0)),
        ("0,0", Point(0.0, 0.0, 1)),
    ],
)
def test_parse_point_accepts(text: str, expected: Point) -> None:
    assert parse_point(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", "invalid point '10': expected X,Y or X,Y,LABEL"),
        ("1,2,1,4", "expected X,Y or X,Y,LABEL"),
        ("a,2", "'a' is not a number"),
        ("1,", "'' is not a number"),
        ("nan,2", "'nan' is not finite"),
        ("1,2,2", "label must be 1 (object) or 0 (background), got '2'"),
        ("1,2,1.0", "label must be 1 (object) or 0 (background), got '1.0'"),
        ("1,2,yes", "got 'yes'"),
    ],
)
def test_parse_point_rejects(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        parse_point(text)


def test_parse_box_accepts() -> None:
    assert parse_box("1,2,30.5,40") == Box(1.0, 2.0, 30.5, 40.0)
    # a zero-width box is degenerate but not reversed
    assert parse_box("5,5,5,9") == Box(5.0, 5.0, 5.0, 9.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", "invalid box '1,2,3': expected X0,Y0,X1,Y1"),
        ("1,2,3,4,5", "expected X0,Y0,X1,Y1"),
        ("1,2,x,4", "'x' is not a number"),
        ("1,2,inf,4", "'inf' is not finite"),
        ("10,20,5,30", "x1 (5) is left of x0 (10)"),
        ("0,20,5,10", "y1 (10) is above y0 (20)"),
    ],
)
def test_parse_box_rejects(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        parse_box(text)


def test_bad_point_is_a_usage_error(capsys: pytest.CaptureFixture[str], image_file: Path) -> None:
    err = _usage_error(
        capsys, ["segment", str(image_file), "--point", "5,5,7", "--out", "mask.png"]
    )
    assert "argument --point: invalid point '5,5,7': label must be 1 (object) or 0" in err


def test_reversed_box_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], image_file: Path
) -> None:
    err = _usage_error(
        capsys, ["segment", str(image_file), "--box", "50,5,10,40", "--out", "m.png"]
    )
    assert "argument --box: invalid box '50,5,10,40': x1 (10) is left of x0 (50)" in err


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = _usage_error(capsys, ["segmnet", "photo.jpg"])
    assert "invalid choice: 'segmnet'" in err


def test_out_is_required(capsys: pytest.CaptureFixture[str], image_file: Path) -> None:
    err = _usage_error(capsys, ["segment", str(image_file), "--point", "5,5"])
    assert "the following arguments are required: --out" in err


def test_model_and_checkpoint_exclude_each_other(
    capsys: pytest.CaptureFixture[str], image_file: Path, tmp_path: Path
) -> None:
    argv = ["segment", str(image_file), "--point", "5,5", "--out", str(tmp_path / "m.png")]
    err = _usage_error(capsys, [*argv, "--model", "sam2.1-hiera-tiny", "--checkpoint", "x.pt"])
    assert "argument --checkpoint: not allowed with argument --model" in err


# --------------------------------------------------------------------------- checks before loading


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "mask.png"


def test_needs_a_prompt(capsys: pytest.CaptureFixture[str], image_file: Path, out: Path) -> None:
    err = _usage_error(capsys, ["segment", str(image_file), "--out", str(out)])
    assert "error: give at least one --point or a --box" in err
    assert not out.exists()


def test_missing_image(capsys: pytest.CaptureFixture[str], tmp_path: Path, out: Path) -> None:
    missing = tmp_path / "nope.jpg"
    err = _usage_error(capsys, ["segment", str(missing), "--point", "1,1", "--out", str(out)])
    assert f"error: image file not found: {missing}" in err


def test_unreadable_image(capsys: pytest.CaptureFixture[str], tmp_path: Path, out: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    err = _usage_error(capsys, ["segment", str(fake), "--point", "1,1", "--out", str(out)])
    assert f"error: cannot read image {fake}: notes.png is not a picture sam2ui can read" in err


def test_image_that_is_a_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, out: Path
) -> None:
    err = _usage_error(capsys, ["segment", str(tmp_path), "--point", "1,1", "--out", str(out)])
    assert f"error: not an image file: {tmp_path}" in err


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (["--point", "81,10"], "point 81,10 lies outside the 80x60 image"),
        (["--point", "10,60.5"], "point 10,60.5 lies outside the 80x60 image"),
        (["--point", "3,3", "--box", "0,0,90,20"], "box 0,0,90,20 reaches outside the 80x60"),
    ],
)
def test_prompt_outside_image(
    capsys: pytest.CaptureFixture[str],
    image_file: Path,
    out: Path,
    prompt: list[str],
    message: str,
) -> None:
    err = _usage_error(capsys, ["segment", str(image_file), *prompt, "--out", str(out)])
    assert f"error: {message}" in err


def test_unknown_variant(capsys: pytest.CaptureFixture[str], image_file: Path, out: Path) -> None:
    argv = ["segment", str(image_file), "--point", "1,1", "--out", str(out)]
    err = _usage_error(capsys, [*argv, "--model", "sam2.1-hiera-huge"])
    assert "unknown SAM 2 variant 'sam2.1-hiera-huge'" in err
    assert "sam2-hiera-tiny" in err  # the message lists the known variants


def test_missing_checkpoint(
    capsys: pytest.CaptureFixture[str], image_file: Path, tmp_path: Path, out: Path
) -> None:
    missing = tmp_path / "weights.pt"
    argv = ["segment", str(image_file), "--point", "1,1", "--out", str(out)]
    err = _usage_error(capsys, [*argv, "--checkpoint", str(missing)])
    assert f"error: checkpoint not found: {missing}" in err


def test_out_folder_must_exist(
    capsys: pytest.CaptureFixture[str], image_file: Path, tmp_path: Path
) -> None:
    target = tmp_path / "no-such-folder" / "mask.png"
    err = _usage_error(capsys, ["segment", str(image_file), "--point", "1,1", "--out", str(target)])
    assert f"error: folder for {target} does not exist" in err


# --------------------------------------------------------------------------- helpers


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda") == "cuda"  # an explicit choice is kept as given
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_render_overlay_tints_mask_and_draws_prompts() -> None:
    rgb = np.zeros((40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), dtype=bool)
    mask[0:5, 0:5] = True
    overlay = np.asarray(
        render_overlay(rgb, mask, [Point(30, 20, 1), Point(40, 30, 0)], Box(10, 8, 20, 18))
    )
    assert overlay.shape == (40, 50, 3)
    # half the mask colour over black, rounded: (15, 72, 128)
    expected_tint = np.floor(np.asarray(MASK_COLOR) * 0.5 + 0.5)
    np.testing.assert_array_equal(overlay[2, 2], expected_tint)
    np.testing.assert_array_equal(overlay[35, 5], (0, 0, 0))  # untouched background
    np.testing.assert_array_equal(overlay[20, 30], POSITIVE_COLOR)
    np.testing.assert_array_equal(overlay[30, 40], NEGATIVE_COLOR)
    np.testing.assert_array_equal(overlay[8, 15], BOX_COLOR)  # top edge of the box
    np.testing.assert_array_equal(overlay[13, 15], (0, 0, 0))  # inside the box: only an outline


# --------------------------------------------------------------------------- processes


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import sam2ui\n"
        "from sam2ui.cli import build_parser\n"
        "build_parser().parse_args(['segment', 'x.png', '--point', '1,2', '--out', 'm.png'])\n"
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_package_exports_load_lazily() -> None:
    import sam2ui
    from sam2ui.core.image.predictor import SAM2ImagePredictor
    from sam2ui.core.modeling.config import get_config

    assert sam2ui.SAM2ImagePredictor is SAM2ImagePredictor
    assert sam2ui.get_config is get_config
    assert len(sam2ui.variant_names()) == 8
    assert "SAM2AutomaticMaskGenerator" in dir(sam2ui)
    with pytest.raises(AttributeError, match="has no attribute 'SAM3'"):
        _ = sam2ui.SAM3


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sam2ui", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"sam2ui {__version__}"


# --------------------------------------------------------------------------- with a stand-in engine


class _FakePredictor:
    """Records what the CLI asks of the engine and answers with fixed masks and scores."""

    calls: ClassVar[list[tuple[str, object]]] = []
    load_error: ClassVar[Exception | None] = None
    compiled: ClassVar[bool | None] = None

    @classmethod
    def from_pretrained(
        cls, source: str, *, device: str, dtype: object, compile: bool = False
    ) -> _FakePredictor:
        cls.calls.append(("from_pretrained", (source, device, dtype)))
        cls.compiled = compile
        if cls.load_error is not None:
            raise cls.load_error
        return cls()

    def set_image(self, image: np.ndarray) -> None:
        self.calls.append(("set_image", image.shape))

    def predict(self, **kwargs: object) -> tuple[object, object, object]:
        import torch

        self.calls.append(("predict", kwargs))
        count = 3 if kwargs["multimask_output"] else 1
        # Mask i covers the first 10 * (i + 1) rows; float 0/1 tensors, as torch returns them.
        masks = torch.zeros(count, HEIGHT, WIDTH)
        for i in range(count):
            masks[i, : 10 * (i + 1)] = 1.0
        scores = torch.tensor([0.25, 0.875, 0.5][:count])
        return masks, scores, torch.zeros(count, 256, 256)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> type[_FakePredictor]:
    monkeypatch.setattr(sam2ui.core, "SAM2ImagePredictor", _FakePredictor)
    monkeypatch.setattr(_FakePredictor, "calls", [])
    monkeypatch.setattr(_FakePredictor, "load_error", None)
    monkeypatch.setattr(_FakePredictor, "compiled", None)
    return _FakePredictor


def test_compile_is_asked_for_and_warmed_up_before_the_work(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: type[_FakePredictor],
    image_file: Path,
    out: Path,
) -> None:
    warmed: list[object] = []

    def warm_up(predictor: object) -> float:
        warmed.append(predictor)
        fake_engine.calls.append(("warm_up", None))
        return 12.34

    monkeypatch.setattr(sam2ui.core, "warm_up", warm_up)
    argv = ["segment", str(image_file), "--point", "45,30", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    assert fake_engine.compiled is False and warmed == []
    assert "compil" not in capsys.readouterr().err

    fake_engine.calls.clear()
    assert main([*argv, "--compile"]) == 0
    assert fake_engine.compiled is True
    assert len(warmed) == 1 and isinstance(warmed[0], _FakePredictor)
    # Warmed up after loading, before the image is encoded.
    assert [name for name, _ in fake_engine.calls] == [
        "from_pretrained", "warm_up", "set_image", "predict",
    ]  # fmt: skip
    err = capsys.readouterr().err
    assert err == "sam2ui segment: compiling the model...\nsam2ui segment: compiled in 12.3 s\n"


def test_variant_name_and_dtype_reach_the_engine(
    fake_engine: type[_FakePredictor], image_file: Path, out: Path
) -> None:
    import torch

    argv = ["segment", str(image_file), "--point", "45,30", "--point", "15,15,0"]
    argv += ["--model", "sam2.1-hiera-small", "--device", "cpu", "--dtype", "bfloat16"]
    assert main([*argv, "--out", str(out)]) == 0

    (load, source), (_, shape), (_, kwargs) = fake_engine.calls
    assert (load, source) == (
        "from_pretrained",
        ("facebook/sam2.1-hiera-small", "cpu", torch.bfloat16),
    )
    assert shape == (HEIGHT, WIDTH, 3)
    assert isinstance(kwargs, dict)
    np.testing.assert_array_equal(kwargs["point_coords"], [[45.0, 30.0], [15.0, 15.0]])
    np.testing.assert_array_equal(kwargs["point_labels"], [1, 0])
    assert kwargs["box"] is None
    assert kwargs["multimask_output"] is False
    assert _read_mask(out).sum() == 10 * WIDTH  # the single mask: the first 10 rows


@pytest.mark.parametrize(
    ("model_args", "expected"),
    [
        ([], "facebook/sam2.1-hiera-tiny"),
        (["--model", "sam2_hiera_b+"], "facebook/sam2-hiera-base-plus"),
        (["--model", "facebook/sam2-hiera-large"], "facebook/sam2-hiera-large"),
        # A hub id the engine does not know still goes to it: the engine says what it accepts.
        (["--model", "someone/finetuned-sam2"], "someone/finetuned-sam2"),
    ],
)
def test_model_sources(
    fake_engine: type[_FakePredictor],
    image_file: Path,
    out: Path,
    model_args: list[str],
    expected: str,
) -> None:
    argv = ["segment", str(image_file), "--point", "1,1", "--device", "cpu", "--out", str(out)]
    assert main([*argv, *model_args]) == 0
    assert fake_engine.calls[0][1][0] == expected  # type: ignore[index]


def test_local_path_as_model(
    fake_engine: type[_FakePredictor], image_file: Path, out: Path
) -> None:
    weights = out.parent / "weights"
    weights.mkdir()  # e.g. a transformers-format folder
    argv = ["segment", str(image_file), "--point", "1,1", "--device", "cpu", "--out", str(out)]
    assert main([*argv, "--model", str(weights)]) == 0
    assert main([*argv, "--checkpoint", str(weights)]) == 0
    assert [call[1][0] for call in fake_engine.calls[::3]] == [str(weights)] * 2  # type: ignore[index]


def test_multimask_saves_the_best_candidate(
    capsys: pytest.CaptureFixture[str],
    fake_engine: type[_FakePredictor],
    image_file: Path,
    out: Path,
) -> None:
    argv = ["segment", str(image_file), "--box", "0,0,80,60", "--multimask", "--device", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0

    kwargs = fake_engine.calls[2][1]
    assert isinstance(kwargs, dict)
    assert kwargs["point_coords"] is None
    assert kwargs["point_labels"] is None
    np.testing.assert_array_equal(kwargs["box"], [0.0, 0.0, 80.0, 60.0])
    assert kwargs["multimask_output"] is True
    mask = _read_mask(out)
    assert mask[:20].all()
    assert not mask[20:].any()
    stdout = capsys.readouterr().out
    assert f"{out}: 80x60 mask, 1600 pixels (33.3%), predicted IoU 0.875\n" in stdout
    assert "candidates: 0.250, 0.875 (saved), 0.500\n" in stdout


def test_load_failure_is_reported(
    capsys: pytest.CaptureFixture[str],
    fake_engine: type[_FakePredictor],
    image_file: Path,
    out: Path,
) -> None:
    fake_engine.load_error = OSError("offline and not in the cache")
    argv = ["segment", str(image_file), "--point", "1,1", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == (
        "sam2ui segment: error: cannot load model facebook/sam2.1-hiera-tiny: "
        "offline and not in the cache\n"
    )
    assert not out.exists()


def test_unavailable_device(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: type[_FakePredictor],
    image_file: Path,
    out: Path,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["segment", str(image_file), "--point", "1,1", "--device", "cuda", "--out", str(out)]
    err = _usage_error(capsys, argv)
    assert "error: --device cuda: no such device is available here" in err
    assert fake_engine.calls == []


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def checkpoint(meta_checkpoint) -> Path:
    """Random-weight Meta checkpoint of the tiny SAM 2.1 model."""
    return meta_checkpoint("sam2.1-hiera-tiny")


@pytest.fixture(scope="module")
def predictor(checkpoint: Path):
    """The engine's predictor on the same weights and image, to compare the CLI against."""
    import torch

    from sam2ui.core.image.predictor import SAM2ImagePredictor

    model = SAM2ImagePredictor.from_pretrained(str(checkpoint), device="cpu", dtype=torch.float32)
    model.set_image(_scene())
    return model


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.mode == "L"
        assert image.size == (WIDTH, HEIGHT)
        values = np.asarray(image)
    assert set(np.unique(values).tolist()) <= {0, 255}
    return values == 255


def test_segment_with_points(
    capsys: pytest.CaptureFixture[str], image_file: Path, out: Path, checkpoint: Path, predictor
) -> None:
    argv = ["segment", str(image_file), "--point", "45,30", "--point", "15,15,0"]
    assert main([*argv, "--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(out)]) == 0

    masks, scores, _ = predictor.predict(
        point_coords=np.array([[45.0, 30.0], [15.0, 15.0]], dtype=np.float32),
        point_labels=np.array([1, 0]),
        multimask_output=False,
    )
    expected = _as_numpy(masks)[0] > 0
    np.testing.assert_array_equal(_read_mask(out), expected)

    score = float(_as_numpy(scores).reshape(-1)[0])
    area = int(expected.sum())
    stdout = capsys.readouterr().out
    assert f"{out}: 80x60 mask, {area} pixels" in stdout
    assert f"predicted IoU {score:.3f}" in stdout


def test_segment_multimask_box_and_overlay(
    capsys: pytest.CaptureFixture[str],
    image_file: Path,
    tmp_path: Path,
    out: Path,
    checkpoint: Path,
    predictor,
) -> None:
    overlay = tmp_path / "overlay.png"
    argv = ["segment", str(image_file), "--box", "28,12,62,48", "--multimask"]
    argv += ["--checkpoint", str(checkpoint), "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--overlay", str(overlay)]) == 0

    masks, scores, _ = predictor.predict(
        point_coords=None,
        point_labels=None,
        box=np.array([28.0, 12.0, 62.0, 48.0], dtype=np.float32),
        multimask_output=True,
    )
    scores_np = _as_numpy(scores).reshape(-1)
    assert scores_np.shape == (3,)
    best = int(np.argmax(scores_np))
    expected = _as_numpy(masks)[best] > 0
    np.testing.assert_array_equal(_read_mask(out), expected)

    with Image.open(overlay) as image:
        assert (image.mode, image.size) == ("RGB", (WIDTH, HEIGHT))
        drawn = np.asarray(image)
    np.testing.assert_array_equal(drawn[12, 45], BOX_COLOR)  # top edge of the box

    stdout = capsys.readouterr().out
    assert f"predicted IoU {scores_np[best]:.3f}" in stdout
    candidates = [f"{s:.3f}" + (" (saved)" if i == best else "") for i, s in enumerate(scores_np)]
    assert f"candidates: {', '.join(candidates)}" in stdout
