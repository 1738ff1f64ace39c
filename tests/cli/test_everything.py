"""``sam2ui everything``: automatic masks written as COCO RLE JSON, progress, Ctrl-C."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sam2ui.cli import main
from sam2ui.core import SAM2AutomaticMaskGenerator, SAM2ImagePredictor, rle_to_mask

from .test_segment import _scene, _usage_error

SETTINGS = ["--points-per-side", "4", "--points-per-batch", "8"]
FILTERS = ["--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture(scope="module")
def checkpoint(meta_checkpoint) -> Path:
    return meta_checkpoint("sam2.1-hiera-tiny")


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(_scene()).save(path)
    return path


def _expected(checkpoint: Path, **kwargs: Any) -> list[dict[str, Any]]:
    predictor = SAM2ImagePredictor.from_pretrained(str(checkpoint), device="cpu")
    settings: dict[str, Any] = dict(
        points_per_side=4,
        points_per_batch=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        output_mode="coco_rle",
    )
    gen = SAM2AutomaticMaskGenerator(predictor, **{**settings, **kwargs})
    return gen.generate(_scene())


def test_writes_the_generator_records_with_a_progress_bar(
    capsys: pytest.CaptureFixture[str], image_file: Path, tmp_path: Path, checkpoint: Path
) -> None:
    out, overlay = tmp_path / "masks.json", tmp_path / "overlay.png"
    argv = ["everything", str(image_file), *SETTINGS, *FILTERS, "--checkpoint", str(checkpoint)]
    assert main([*argv, "--device", "cpu", "--out", str(out), "--overlay", str(overlay)]) == 0
    captured = capsys.readouterr()
    records = json.loads(out.read_text())
    expected = _expected(checkpoint)
    assert len(records) == len(expected) > 0
    for got, want in zip(records, expected):
        assert got["segmentation"] == want["segmentation"] and got["area"] == want["area"]
        assert got["bbox"] == want["bbox"]
    assert "16/16" in captured.err  # the tqdm bar reached the grid's 16 points
    assert captured.out.splitlines()[0] == f"{out}: {len(records)} masks of a 80x60 image"
    drawn = np.asarray(Image.open(overlay).convert("RGB"))
    largest = max(records, key=lambda r: r["area"])
    changed = np.any(drawn != _scene(), axis=-1)
    assert drawn.shape == (60, 80, 3) and changed[rle_to_mask(largest["segmentation"])].any()


def test_ctrl_c_stops_after_the_batch_and_writes_what_was_found(
    capsys: pytest.CaptureFixture[str],
    image_file: Path,
    tmp_path: Path,
    checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tqdm

    real = tqdm.tqdm

    class InterruptedBar(real):  # type: ignore[misc, valid-type]
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.n == 8:  # Ctrl-C during the second batch
                signal.raise_signal(signal.SIGINT)
            return shown

    monkeypatch.setattr(tqdm, "tqdm", InterruptedBar)
    out = tmp_path / "masks.json"
    argv = ["everything", str(image_file), *SETTINGS, *FILTERS, "--checkpoint", str(checkpoint)]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 0
    records = json.loads(out.read_text())
    first_batch = _expected(checkpoint, points_per_side=None, point_grids=[_grid()[:8]])
    assert [r["segmentation"] for r in records] == [r["segmentation"] for r in first_batch]
    full = _expected(checkpoint)
    assert len(records) > 0 and records[0]["point_coords"] != full[0]["point_coords"]
    captured = capsys.readouterr()
    assert "(stopped after 8 of 16 points)" in captured.out
    assert "stopping after the current batch of points" in captured.err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def _grid() -> np.ndarray:
    from sam2ui.core.image.generator_parts import build_point_grid

    return build_point_grid(4)


def test_bad_thresholds_are_usage_errors(
    capsys: pytest.CaptureFixture[str], image_file: Path
) -> None:
    argv = ["everything", str(image_file), "--out", "m.json"]
    assert "--pred-iou-thresh must be in [0, 1]" in _usage_error(
        capsys, [*argv, "--pred-iou-thresh", "2"]
    )
    assert "--points-per-side must be 1 to 256" in _usage_error(
        capsys, [*argv, "--points-per-side", "0"]
    )
