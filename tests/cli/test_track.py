"""Tests of ``sam2ui track``: prompt files, validation, writer orchestration and one real run."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

import sam2ui.core
from sam2ui.cli import (
    Box,
    Point,
    PromptError,
    _Progress,
    load_prompt_file,
    main,
    parse_formats,
)
from sam2ui.core.exports import write_sav_json

WIDTH, HEIGHT, FRAMES = 80, 64, 6


def _frame(i: int) -> np.ndarray:
    rgb = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    rgb[10:40, 10 + 5 * i : 40 + 5 * i] = (230, 200, 30)
    return rgb


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """A folder of six 80x64 JPEG frames."""
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(FRAMES):
        Image.fromarray(_frame(i)).save(folder / f"{i:05d}.jpg")
    return folder


def _fake_mask(obj_id: int, frame_idx: int) -> np.ndarray:
    """What the fake predictor tracks: object k owns rows 2f..2f+3 of columns 20k..20k+9."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[2 * frame_idx : 2 * frame_idx + 4, 20 * obj_id : 20 * obj_id + 10] = True
    return mask


class _FakeVideoPredictor:
    """Stands in for SAM2VideoPredictor: records calls and yields known masks."""

    calls: ClassVar[list[tuple[str, Any]]] = []
    load_error: ClassVar[Exception | None] = None
    interrupt_after: ClassVar[int | None] = None

    def __init__(self) -> None:
        self.obj_ids: list[int] = []
        self.yielded = 0

    @classmethod
    def from_pretrained(
        cls, source: str, *, device: str, dtype: torch.dtype, compile: bool = False
    ) -> Any:
        cls.calls.append(("from_pretrained", (source, device, dtype)))
        if compile:
            cls.calls.append(("compile", True))
        if cls.load_error is not None:
            raise cls.load_error
        return cls()

    def init_state(self, video: Any) -> dict[str, int]:
        self.calls.append(("init_state", (len(video), video.height, video.width)))
        return {"frames": len(video)}

    def add_new_points_or_box(self, state: Any, frame_idx: int, obj_id: int, **kw: Any) -> None:
        self.calls.append(("points", (frame_idx, obj_id, kw)))
        self.obj_ids += [obj_id] if obj_id not in self.obj_ids else []

    def add_new_mask(self, state: Any, frame_idx: int, obj_id: int, mask: np.ndarray) -> None:
        self.calls.append(("mask", (frame_idx, obj_id, mask)))
        self.obj_ids += [obj_id] if obj_id not in self.obj_ids else []

    def propagate_in_video(
        self, state: Any, start_frame_idx: int, max_frame_num_to_track: int, reverse: bool
    ) -> Iterator[tuple[int, list[int], torch.Tensor]]:
        self.calls.append(("propagate", (start_frame_idx, max_frame_num_to_track, reverse)))
        n, start, span = state["frames"], start_frame_idx, max_frame_num_to_track
        if reverse:
            order = range(start, max(start - span, 0) - 1, -1)
        else:
            order = range(start, min(start + span, n - 1) + 1)
        for f in order:
            if self.interrupt_after is not None and self.yielded == self.interrupt_after:
                raise KeyboardInterrupt
            self.yielded += 1
            masks = np.stack([_fake_mask(i, f) for i in self.obj_ids])[:, None]
            yield f, list(self.obj_ids), torch.from_numpy(masks).float() * 20 - 10


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[_FakeVideoPredictor]:
    monkeypatch.setattr(sam2ui.core, "SAM2VideoPredictor", _FakeVideoPredictor)
    monkeypatch.setattr(_FakeVideoPredictor, "calls", [])
    monkeypatch.setattr(_FakeVideoPredictor, "load_error", None)
    monkeypatch.setattr(_FakeVideoPredictor, "interrupt_after", None)
    return _FakeVideoPredictor


def _zip_frames(path: Path) -> dict[int, np.ndarray]:
    """The DAVIS indexed PNGs of a masks.zip, frame -> (H, W) object ids."""
    with zipfile.ZipFile(path) as zf:
        return {
            int(name[:5]): np.array(Image.open(io.BytesIO(zf.read(name))))
            for name in zf.namelist()
            if "/" not in name
        }


def _mp4_frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc_info:
        main(argv)
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sam2ui track")
    return err


# --------------------------------------------------------------------------- prompt files


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_prompt_file_schema(tmp_path: Path) -> None:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[5:9, 3:7] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "m.png")
    path = _write_json(
        tmp_path / "p.json",
        {
            "objects": [
                {"id": 1, "name": "dog", "frame": 0, "points": [[10, 20], [30.5, 4, 0]]},
                {"id": 1, "frame": 3, "box": [1, 2, 30, 40]},
                {"id": 2, "frame": 5, "mask": "masks/m.png"},
            ]
        },
    )
    one, two, three = load_prompt_file(path)
    assert (one.obj_id, one.frame, one.name) == (1, 0, "dog")
    assert one.points == (Point(10.0, 20.0, 1), Point(30.5, 4.0, 0))
    assert one.box is None and one.mask is None
    assert (two.obj_id, two.frame, two.box, two.points) == (1, 3, Box(1, 2, 30, 40), ())
    assert (three.obj_id, three.frame) == (2, 5)
    assert three.mask is not None and three.mask.sum() == 16 and three.mask[5, 3]
    assert three.where == f"{path}: objects[2]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"objects": [\n  {"id": 1,}]}', "invalid JSON at line 2 column 12"),
        ("[1, 2]", 'expected {"objects": [...]} or an SA-V masklet JSON'),
        ('{"objects": [], "x": 1}', "unknown top-level key 'x'"),
        ('{"objects": []}', "'objects' must be a non-empty list"),
        ('{"objects": [{"id": 1, "point": [[1, 2]]}]}', "objects[0]: unknown key 'point'"),
        ('{"objects": [{"frame": 0, "box": [0, 0, 5, 5]}]}', "objects[0]: 'id' is missing"),
        ('{"objects": [{"id": 0, "box": [0, 0, 5, 5]}]}', "'id' must be >= 1, got 0"),
        ('{"objects": [{"id": 1, "frame": 2}]}', "object 1 has no prompt: give 'points'"),
        ('{"objects": [{"id": 1, "points": [[1]]}]}', "objects[0].points[0]: expected [x, y]"),
        ('{"objects": [{"id": 1, "points": [[1, 2, 3]]}]}', "label must be 1 (object) or 0"),
        ('{"objects": [{"id": 1, "box": [9, 0, 5, 5]}]}', "top-left corner must come first"),
        ('{"objects": [{"id": 1, "frame": -1, "box": [0, 0, 5, 5]}]}', "'frame' must be >= 0"),
        (
            '{"objects": [{"id": 1, "mask": "m.png", "points": [[1, 2]]}]}',
            "give either a 'mask' or 'points'/'box', not both",
        ),
        ('{"objects": [{"id": 1, "mask": "nope.png"}]}', "objects[0].mask: mask file not found"),
        (
            '{"objects": [{"id": 1, "points": [[1, 2]]}, {"id": 1, "points": [[3, 4]]}]}',
            "objects[1]: object 1 is already prompted on frame 0",
        ),
    ],
)
def test_prompt_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(PromptError) as exc_info:
        load_prompt_file(path)
    assert message in str(exc_info.value)


def test_sav_json_as_prompts(tmp_path: Path) -> None:
    results = {2: {3: _fake_mask(1, 2)}, 3: {3: _fake_mask(1, 3), 5: _fake_mask(2, 3)}}
    path = write_sav_json(
        results, tmp_path / "masks.json", height=HEIGHT, width=WIDTH, object_names={5: "cat"}
    )
    first, second = load_prompt_file(path)
    assert (first.obj_id, first.frame, first.name) == (3, 2, None)
    assert (second.obj_id, second.frame, second.name) == (5, 3, "cat")
    assert first.mask is not None and second.mask is not None
    np.testing.assert_array_equal(first.mask, _fake_mask(1, 2))
    np.testing.assert_array_equal(second.mask, _fake_mask(2, 3))


def test_prompt_file_masks_stay_in_its_folder(
    capsys: pytest.CaptureFixture[str], fake: type[_FakeVideoPredictor], video: Path, tmp_path: Path
) -> None:
    mask = (_fake_mask(2, 4) * 255).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "elsewhere.png")
    folder = tmp_path / "a" / "b" / "c"
    (folder / "inner").mkdir(parents=True)
    Image.fromarray(mask).save(folder / "inner" / "ok.png")
    (folder / "link.png").symlink_to(tmp_path / "elsewhere.png")
    prompts = folder / "p.json"
    for name in ("../../../elsewhere.png", str(tmp_path / "elsewhere.png"), "link.png"):
        _write_json(prompts, {"objects": [{"id": 2, "frame": 4, "mask": name}]})
        with pytest.raises(PromptError) as exc_info:
            load_prompt_file(prompts)
        assert "outside the prompt file's folder" in str(exc_info.value)
        (outside,) = load_prompt_file(prompts, allow_outside_paths=True)
        np.testing.assert_array_equal(outside.mask, mask > 0)
    _write_json(prompts, {"objects": [{"id": 2, "frame": 4, "mask": "inner/../inner/ok.png"}]})
    np.testing.assert_array_equal(load_prompt_file(prompts)[0].mask, mask > 0)

    _write_json(prompts, {"objects": [{"id": 2, "frame": 4, "mask": "../../../elsewhere.png"}]})
    argv = ["track", str(video), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    err = _usage_error(capsys, argv)
    assert "'../../../elsewhere.png' lies outside the prompt file's folder" in err
    assert "--allow-outside-paths" in err and fake.calls == []
    argv += ["--quiet", "--checkpoint", str(prompts), "--device", "cpu"]
    assert main([*argv, "--allow-outside-paths"]) == 0
    assert [kind for kind, _ in fake.calls][2] == "mask"
    np.testing.assert_array_equal(fake.calls[2][1][2], mask > 0)


def test_parse_formats() -> None:
    assert parse_formats("zip") == ("zip",)
    assert parse_formats("mp4, zip,mp4") == ("mp4", "zip")


def test_progress_line() -> None:
    progress = _Progress(total=100, quiet=True)
    for _ in range(25):
        progress.update()
    assert progress.line(10.0) == "tracking 25/100 frames, 2.50 fps, ETA 0:30"
    assert _Progress(total=5, quiet=True).line(0.0) == "tracking 0/5 frames, 0.00 fps, ETA ?"


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give at least one --point or a --box, or a --prompts file"),
        (["--point", "10,10", "--frame", "6"], "frame 6 is out of range: the video has 6 frames"),
        (["--point", "81,10"], "point 81,10 lies outside the 80x64 frame"),
        (["--box", "0,0,10,70"], "box 0,0,10,70 reaches outside the 80x64 frame"),
        (["--point", "1,1", "--prompts", "p.json"], "give either --prompts or --point/--box"),
        (["--point", "1,1", "--formats", "zip,gif"], "invalid formats 'zip,gif'"),
        (["--point", "1,1", "--frame", "-1"], "argument --frame: must be >= 0"),
        (["--point", "1,1", "--max-frames", "-2"], "argument --max-frames: must be >= 0"),
        (["--prompts", "missing.json"], "prompt file not found: missing.json"),
    ],
)
def test_usage_errors(
    capsys: pytest.CaptureFixture[str],
    fake: type[_FakeVideoPredictor],
    video: Path,
    tmp_path: Path,
    extra: list[str],
    message: str,
) -> None:
    err = _usage_error(capsys, ["track", str(video), "--out", str(tmp_path / "o"), *extra])
    assert message in err
    assert fake.calls == []  # nothing was loaded
    assert not (tmp_path / "o").exists()


def test_missing_video(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    err = _usage_error(capsys, ["track", str(missing), "--point", "1,1", "--out", str(tmp_path)])
    assert f"error: video not found: {missing}" in err


def test_bad_json_through_the_cli(
    capsys: pytest.CaptureFixture[str], video: Path, tmp_path: Path
) -> None:
    prompts = tmp_path / "p.json"
    prompts.write_text('{"objects": [{"id": 1, "frame": 9, "box": [0, 0, 5, 5]}]}')
    argv = ["track", str(video), "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    err = _usage_error(capsys, argv)
    assert f"{prompts}: objects[0]: frame 9 is out of range: the video has 6 frames (0..5)" in err


# --------------------------------------------------------------------------- runs (fake model)


def test_both_directions_write_every_frame_in_order(
    capsys: pytest.CaptureFixture[str], fake: type[_FakeVideoPredictor], video: Path, tmp_path: Path
) -> None:
    mask = (_fake_mask(2, 4) * 255).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    prompts = _write_json(
        tmp_path / "p.json",
        {
            "objects": [
                {"id": 1, "name": "box", "frame": 2, "points": [[10, 20], [5, 5, 0]]},
                {"id": 2, "frame": 4, "mask": "m.png"},
            ]
        },
    )
    out = tmp_path / "out"
    argv = ["track", str(video), "--prompts", str(prompts), "--out", str(out), "--quiet"]
    assert main([*argv, "--checkpoint", str(prompts), "--device", "cpu"]) == 0

    kinds = [kind for kind, _ in fake.calls]
    assert kinds == ["from_pretrained", "init_state", "points", "mask", "propagate", "propagate"]
    assert fake.calls[1][1] == (FRAMES, HEIGHT, WIDTH)
    frame_idx, obj_id, kw = fake.calls[2][1]
    assert (frame_idx, obj_id) == (2, 1)
    np.testing.assert_array_equal(kw["points"], [[10, 20], [5, 5]])
    np.testing.assert_array_equal(kw["labels"], [1, 0])
    assert kw["box"] is None
    np.testing.assert_array_equal(fake.calls[3][1][2], _fake_mask(2, 4))
    assert fake.calls[4][1] == (2, 3, False)  # forward from the earliest prompt
    assert fake.calls[5][1] == (2, 2, True)  # then back to frame 0

    frames = _zip_frames(out / "masks.zip")
    assert sorted(frames) == list(range(FRAMES))
    for f, indexed in frames.items():
        np.testing.assert_array_equal(indexed == 1, _fake_mask(1, f))
        np.testing.assert_array_equal(indexed == 2, _fake_mask(2, f))
    data = json.loads((out / "masks.json").read_text())
    assert data["sam2ui"]["frame_indices"] == list(range(FRAMES))
    assert data["masklet_id"] == [1, 2]
    assert data["sam2ui"]["object_names"] == {"1": "box"}
    assert data["video_id"] == "clip"
    assert _mp4_frame_count(out / "overlay.mp4") == FRAMES
    stdout = capsys.readouterr().out
    assert "tracked 2 object(s) on frames 0..5 (6 frames)" in stdout


def test_forward_streams_limited_frames(
    fake: type[_FakeVideoPredictor], video: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    argv = ["track", str(video), "--box", "10,10,40,40", "--frame", "1", "--out", str(out)]
    argv += ["--direction", "forward", "--max-frames", "2", "--formats", "zip,json", "--quiet"]
    assert main(argv) == 0
    assert fake.calls[0][1][0] == "facebook/sam2.1-hiera-tiny"
    np.testing.assert_array_equal(fake.calls[2][1][2]["box"], [10, 10, 40, 40])
    assert [c for k, c in fake.calls if k == "propagate"] == [(1, 2, False)]
    assert sorted(_zip_frames(out / "masks.zip")) == [1, 2, 3]
    assert json.loads((out / "masks.json").read_text())["sam2ui"]["frame_indices"] == [1, 2, 3]
    assert not (out / "overlay.mp4").exists()


def test_backward_starts_at_the_latest_prompt(
    fake: type[_FakeVideoPredictor], video: Path, tmp_path: Path
) -> None:
    prompts = _write_json(
        tmp_path / "p.json",
        {
            "objects": [
                {"id": 1, "frame": 1, "box": [0, 0, 9, 9]},
                {"id": 3, "frame": 4, "box": [0, 0, 5, 5]},
            ]
        },
    )
    out = tmp_path / "out"
    argv = ["track", str(video), "--prompts", str(prompts), "--out", str(out)]
    assert main([*argv, "--direction", "backward", "--formats", "mp4,zip", "--quiet"]) == 0
    assert [c for k, c in fake.calls if k == "propagate"] == [(4, 4, True)]
    assert sorted(_zip_frames(out / "masks.zip")) == [0, 1, 2, 3, 4]
    assert _mp4_frame_count(out / "overlay.mp4") == 5


def test_ctrl_c_keeps_the_frames_so_far(
    capsys: pytest.CaptureFixture[str], fake: type[_FakeVideoPredictor], video: Path, tmp_path: Path
) -> None:
    fake.interrupt_after = 3
    out = tmp_path / "out"
    argv = ["track", str(video), "--point", "20,20", "--frame", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 130
    # forward 2, 3, 4, then Ctrl-C: the masks of those three frames are written
    assert sorted(_zip_frames(out / "masks.zip")) == [2, 3, 4]
    assert json.loads((out / "masks.json").read_text())["sam2ui"]["frame_indices"] == [2, 3, 4]
    assert _mp4_frame_count(out / "overlay.mp4") == 3
    err = capsys.readouterr().err
    assert "interrupted after 3 of 6 frames; wrote the frames tracked so far" in err


def test_ctrl_c_before_any_frame_writes_nothing(
    capsys: pytest.CaptureFixture[str], fake: type[_FakeVideoPredictor], video: Path, tmp_path: Path
) -> None:
    fake.interrupt_after = 0
    out = tmp_path / "out"
    assert main(["track", str(video), "--point", "20,20", "--out", str(out), "--quiet"]) == 130
    assert list(out.iterdir()) == []
    assert "interrupted before any frame was tracked; nothing written" in capsys.readouterr().err


def test_compile_warms_up_before_the_session(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake: type[_FakeVideoPredictor],
    video: Path,
    tmp_path: Path,
) -> None:
    def warm_up(predictor: object) -> float:
        assert isinstance(predictor, _FakeVideoPredictor)
        fake.calls.append(("warm_up", None))
        return 3.0

    monkeypatch.setattr(sam2ui.core, "warm_up", warm_up)
    argv = ["track", str(video), "--point", "20,20", "--out", str(tmp_path / "o"), "--compile"]
    assert main([*argv, "--quiet", "--formats", "json"]) == 0
    assert [name for name, _ in fake.calls][:4] == [
        "from_pretrained", "compile", "warm_up", "init_state",
    ]  # fmt: skip
    assert "compil" not in capsys.readouterr().err  # --quiet: nothing said
    # A compile that fails (here: no C++ compiler) is a load failure: exit 1, said once.
    from sam2ui.core import CompilerMissingError

    def no_compiler(predictor: object) -> float:
        raise CompilerMissingError("compiling the model on the CPU needs a C++ compiler")

    monkeypatch.setattr(sam2ui.core, "warm_up", no_compiler)
    argv[-2] = str(tmp_path / "o2")
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.endswith("cannot load model facebook/sam2.1-hiera-tiny: compiling the model on "
                        "the CPU needs a C++ compiler\n")  # fmt: skip


def test_model_failure_is_exit_1(
    capsys: pytest.CaptureFixture[str], fake: type[_FakeVideoPredictor], video: Path, tmp_path: Path
) -> None:
    fake.load_error = OSError("no such repo")
    argv = ["track", str(video), "--point", "20,20", "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert (
        err == "sam2ui track: error: cannot load model facebook/sam2.1-hiera-tiny: no such repo\n"
    )


# --------------------------------------------------------------------------- real model


def test_end_to_end_with_random_weights(
    capsys: pytest.CaptureFixture[str], meta_checkpoint: Any, tmp_path: Path
) -> None:
    import av

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    checkpoint = meta_checkpoint("sam2.1-hiera-tiny")
    out = tmp_path / "out"
    argv = ["track", str(clip), "--point", "30,25", "--frame", "1", "--out", str(out)]
    assert main([*argv, "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0

    frames = _zip_frames(out / "masks.zip")
    assert sorted(frames) == [0, 1, 2]
    assert all(f.shape == (HEIGHT, WIDTH) and set(np.unique(f)) <= {0, 1} for f in frames.values())
    data = json.loads((out / "masks.json").read_text())
    assert data["sam2ui"]["frame_indices"] == [0, 1, 2]
    assert data["video_frame_count"] == 3.0
    assert _mp4_frame_count(out / "overlay.mp4") == 3
    captured = capsys.readouterr()
    assert "tracked 1 object(s) on frames 0..2 (3 frames)" in captured.out
    assert "3/3" in captured.err  # the progress bar
