"""``sam2ui batch``: the manifest, the per-line worker (no Ray), and whole runs on a local Ray
cluster (2 CPUs): results equal to ``sam2ui track``, a corrupt video failed while the rest
finish, reruns that skip, a killed worker, Ctrl+C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sam2ui.cli import main
from sam2ui.cli.batch_ray import plan_cluster
from sam2ui.cli.batch_worker import (
    MAX_TRIES,
    PARTIAL_PREFIX,
    BatchItem,
    BatchOptions,
    BatchWorker,
    ManifestError,
    options_dict,
    read_manifest,
    switch_policy,
)

ROOT = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 80, 64


def _frame(i: int, shift: int = 5) -> np.ndarray:
    rgb = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    rgb[10:40, 10 + shift * i : 40 + shift * i] = (230, 200, 30)
    rgb[44:60, 50 - 2 * i : 70 - 2 * i] = (40, 90, 220)
    return rgb


def _mp4(path: Path, frames: int, shift: int = 5) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_frame(i, shift), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _folder(path: Path, frames: int) -> Path:
    path.mkdir()
    for i in range(frames):
        Image.fromarray(_frame(i, 3)).save(path / f"{i:05d}.png")
    return path


def _prompts(path: Path, objects: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"objects": objects}))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short videos (two mp4s, a folder of frames), an image, one corrupt video, and the
    manifest naming them (relative paths)."""
    pytest.importorskip("av")
    root = tmp_path_factory.mktemp("batch_data")
    (root / "clips").mkdir()
    _mp4(root / "clips" / "a.mp4", 4)
    _mp4(root / "clips" / "b.mp4", 5, shift=2)
    _folder(root / "clips" / "c", 3)
    (root / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video")
    Image.fromarray(_frame(1)).save(root / "photo.png")
    one = _prompts(root / "one.json", [{"id": 1, "points": [[25, 25]]}])
    two = _prompts(
        root / "two.json",
        [
            {"id": 1, "frame": 1, "points": [[20, 25], [60, 50, 0]]},
            {"id": 4, "name": "blue", "frame": 2, "box": [40, 40, 70, 62]},
        ],
    )
    lines = [
        {"id": "a", "video": "clips/a.mp4", "prompts": one.name},
        {"id": "b", "video": "clips/b.mp4", "prompts": two.name},
        {"id": 7, "video": "clips/c", "prompts": one.name},
        {"id": "broken", "video": "clips/broken.mp4", "prompts": one.name},
        {"id": "photo", "image": "photo.png", "prompts": "img.json"},
    ]
    _prompts(
        root / "img.json", [{"id": 1, "points": [[25, 25]]}, {"id": 3, "box": [48, 42, 72, 62]}]
    )
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return root


@pytest.fixture(scope="module")
def checkpoint(meta_checkpoint: Any) -> Path:
    return meta_checkpoint("sam2.1-hiera-tiny")


def _track(video: Path, prompts: Path, out: Path, checkpoint: Path) -> Path:
    """What ``sam2ui track`` writes for the same input (the reference of every batch result)."""
    argv = ["track", str(video), "--prompts", str(prompts), "--out", str(out), "--quiet"]
    argv += ["--formats", "json,zip", "--checkpoint", str(checkpoint), "--device", "cpu"]
    assert main(argv) == 0
    return out


def _same_track_output(got: Path, want: Path) -> None:
    assert sorted(p.name for p in got.iterdir()) == ["masks.json", "masks.zip"]
    assert json.loads((got / "masks.json").read_text()) == json.loads(
        (want / "masks.json").read_text()
    )
    with zipfile.ZipFile(got / "masks.zip") as g, zipfile.ZipFile(want / "masks.zip") as w:
        assert g.namelist() == w.namelist()
        assert all(g.read(name) == w.read(name) for name in g.namelist())


def _results(out: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows)  # one row per id
    return by_id


# ------------------------------------------------------------------------------ manifest


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "manifest.jsonl:2: not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"video": "v.mp4", "prompts": "p.json"}', '"id" is required'),
        ('{"id": "../up", "video": "v.mp4", "prompts": "p.json"}', "cannot name a folder"),
        ('{"id": ".hidden", "video": "v.mp4", "prompts": "p.json"}', "cannot name a folder"),
        ('{"id": "x", "prompts": "p.json"}', 'exactly one of "video" and "image"'),
        ('{"id": "x", "video": "v", "image": "i", "prompts": "p"}', "exactly one of"),
        ('{"id": "x", "video": "v.mp4"}', '"prompts" must be a path'),
        ('{"id": "first", "video": "v.mp4", "prompts": "p.json"}', "'first' repeats line 1"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"id": "first", "video": "v.mp4", "prompts": "p.json"}\n' + line + "\n")
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_manifest(manifest)


def test_manifest_paths_are_relative_to_it(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        '# a comment\n\n{"id": 3, "video": "v/clip.mp4", "prompts": "/abs/p.json"}\n'
        '{"id": "x-1.b", "image": "i.png", "prompts": "p.json"}\n'
    )
    assert read_manifest(manifest) == [
        BatchItem("3", "video", str(tmp_path / "v/clip.mp4"), "/abs/p.json"),
        BatchItem("x-1.b", "image", str(tmp_path / "i.png"), str(tmp_path / "p.json")),
    ]
    (tmp_path / "empty.jsonl").write_text("\n# nothing\n")
    with pytest.raises(ManifestError, match="has no lines to run"):
        read_manifest(tmp_path / "empty.jsonl")


def test_cluster_plan() -> None:
    plan = plan_cluster({"CPU": 16.0}, None, None)
    assert (plan.workers, plan.cpus, plan.gpus) == (1, 16, 0.0)
    plan = plan_cluster({"CPU": 16.0}, 3, None)
    assert (plan.workers, plan.cpus, plan.gpus) == (3, 5, 0.0)
    plan = plan_cluster({"CPU": 32.0, "GPU": 4.0}, None, None)
    assert (plan.workers, plan.cpus, plan.gpus) == (4, 8, 1.0)
    plan = plan_cluster({"CPU": 32.0, "GPU": 4.0}, None, 0.5)
    assert (plan.workers, plan.cpus, plan.gpus) == (8, 4, 0.5)
    with pytest.raises(ValueError, match="need 6 GPUs; the cluster has 4"):
        plan_cluster({"CPU": 32.0, "GPU": 4.0}, 3, 2)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no SCHED_BATCH here")
def test_switch_policy_moves_only_from_the_named_policy() -> None:
    seen: dict[str, Any] = {}

    def probe() -> None:  # in a thread of its own: the policy is a thread's
        seen["start"] = os.sched_getscheduler(0)
        seen["not from batch"] = switch_policy("SCHED_BATCH", "SCHED_OTHER")
        seen["to batch"] = switch_policy("SCHED_OTHER", "SCHED_BATCH")
        seen["at batch"] = os.sched_getscheduler(0)
        child = threading.Thread(target=lambda: seen.update(child=os.sched_getscheduler(0)))
        child.start()
        child.join()
        seen["unknown"] = switch_policy("SCHED_NONE", "SCHED_OTHER")
        seen["back"] = switch_policy("SCHED_BATCH", "SCHED_OTHER")
        seen["end"] = os.sched_getscheduler(0)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    if seen["start"] != os.SCHED_OTHER:
        pytest.skip("the tests run at a scheduling policy other than the normal one")
    assert seen["not from batch"] is False
    assert (seen["to batch"], seen["at batch"], seen["child"]) == (
        True,
        os.SCHED_BATCH,
        os.SCHED_BATCH,
    )
    assert seen["unknown"] is False
    assert (seen["back"], seen["end"]) == (True, os.SCHED_OTHER)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the test's own thread untouched


def test_without_ray_it_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    assert main(["batch", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip() == (
        "sam2ui batch needs Ray Data: pip install 'sam2ui[scale]'"
    )


def test_an_unreachable_cluster_is_reported_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import socket

    pytest.importorskip("ray.data")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "video": "a.mp4", "prompts": "p.json"}\n')
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    argv = ["batch", str(manifest), "--out", str(tmp_path / "out"), "--address"]
    assert main([*argv, f"127.0.0.1:{port}"]) == 1
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert f"cannot start the Ray cluster at 127.0.0.1:{port}: nothing answers at" in err
    row = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert row["status"] == "failed" and row["error"].startswith("cannot start the Ray cluster")


# ------------------------------------------------------------------ the worker, without Ray


def test_worker_writes_what_track_writes(dataset: Path, checkpoint: Path, tmp_path: Path) -> None:
    items = {item.id: item for item in read_manifest(dataset / "manifest.jsonl")}
    options = BatchOptions(source=str(checkpoint), formats=("json", "zip"), threads=2)
    worker = BatchWorker(options_dict(options), str(tmp_path / "out"))
    columns = worker(
        {key: np.array([getattr(items[i], key) for i in ("b", "broken", "photo")])
         for key in ("id", "kind", "path", "prompts")}
    )  # fmt: skip
    rows = {row_id: dict(zip(columns, values)) for row_id, *values in
            zip(columns["id"], *columns.values())}  # fmt: skip
    assert rows["b"]["status"] == "ok" and rows["b"]["error"] is None
    assert (rows["b"]["frames"], rows["b"]["objects"]) == (5, 2)
    assert rows["broken"]["status"] == "failed"
    assert "cannot read video" in rows["broken"]["error"]
    assert rows["photo"]["status"] == "ok"
    assert (rows["photo"]["frames"], rows["photo"]["objects"]) == (1, 2)
    want = _track(dataset / "clips" / "b.mp4", dataset / "two.json", tmp_path / "t", checkpoint)
    _same_track_output(tmp_path / "out" / "b", want)
    out = tmp_path / "out"
    # Nothing half-written; the tries counted (the driver removes the count at the end).
    assert sorted(p.name for p in out.iterdir()) == [".tries", "b", "photo"]
    assert sorted(p.name for p in (out / "photo").iterdir()) == ["object_1.png", "object_3.png"]
    # The image masks are what `sam2ui segment` writes for the same prompts.
    seg = tmp_path / "seg.png"
    argv = ["segment", str(dataset / "photo.png"), "--box", "48,42,72,62", "--out", str(seg)]
    assert main([*argv, "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    assert np.array_equal(
        np.array(Image.open(seg)), np.array(Image.open(out / "photo" / "object_3.png"))
    )


def test_worker_image_prompt_errors(dataset: Path, checkpoint: Path, tmp_path: Path) -> None:
    from sam2ui.core import resolve_device

    worker = BatchWorker(options_dict(BatchOptions(source=str(checkpoint))), str(tmp_path))
    assert worker.device == resolve_device(None).type  # "auto", as the engine picks
    bad = _prompts(tmp_path / "bad.json", [{"id": 1, "frame": 2, "points": [[5, 5]]}])
    row = worker.run(BatchItem("x", "image", str(dataset / "photo.png"), str(bad)))
    assert row["status"] == "failed" and "frame 0 only" in row["error"]
    out = _prompts(tmp_path / "out.json", [{"id": 1, "points": [[500, 5]]}])
    row = worker.run(BatchItem("y", "image", str(dataset / "photo.png"), str(out)))
    assert row["status"] == "failed" and "outside the 80x64 image" in row["error"]
    row = worker.run(BatchItem("z", "video", str(tmp_path / "none.mp4"), str(out)))
    assert row["status"] == "failed" and "video not found" in row["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tries", "bad.json", "out.json"]
    # A line whose earlier tries all killed their worker is not run again.
    (tmp_path / ".tries" / "x").write_text(str(MAX_TRIES))
    row = worker.run(BatchItem("x", "image", str(dataset / "photo.png"), str(out)))
    assert row["status"] == "failed"
    assert row["error"] == f"the worker process died while running it, {MAX_TRIES} times"


def test_worker_compiles_and_warms_up_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sam2ui.core

    loaded: list[bool] = []
    warmed: list[object] = []

    class Loaded:
        @classmethod
        def from_pretrained(cls, source: str, *, device: str, dtype: Any, compile: bool) -> Any:
            loaded.append(compile)
            return cls()

    monkeypatch.setattr(sam2ui.core, "SAM2VideoPredictor", Loaded)
    monkeypatch.setattr(sam2ui.core, "warm_up", warmed.append)
    options = BatchOptions(source="sam2.1-hiera-tiny", device="cpu", compile=True)
    worker = BatchWorker(options_dict(options), str(tmp_path))
    predictor = worker.predictor("video")
    assert worker.predictor("video") is predictor  # loaded, compiled and warmed up once
    assert loaded == [True] and warmed == [predictor]


def test_worker_loads_the_manifest_s_kinds_when_it_starts(
    monkeypatch: pytest.MonkeyPatch, dataset: Path, tmp_path: Path
) -> None:
    import sam2ui.core

    loaded: list[str] = []

    class Loaded:
        kind = "video"

        @classmethod
        def from_pretrained(cls, source: str, *, device: str, dtype: Any, compile: bool) -> Any:
            loaded.append(cls.kind)
            if source == "broken":
                raise OSError("no weights at broken")
            return cls()

    class LoadedImage(Loaded):
        kind = "image"

    monkeypatch.setattr(sam2ui.core, "SAM2VideoPredictor", Loaded)
    monkeypatch.setattr(sam2ui.core, "SAM2ImagePredictor", LoadedImage)
    options = BatchOptions(source="sam2.1-hiera-tiny", device="cpu", preload=("image", "video"))
    worker = BatchWorker(options_dict(options), str(tmp_path))
    assert loaded == ["image", "video"]  # before any line, so no line's seconds hold a load
    assert isinstance(worker.predictor("video"), Loaded) and len(loaded) == 2
    # A model that cannot load does not stop the worker: each line says why it failed.
    options = BatchOptions(source="broken", device="cpu", preload=("image",))
    worker = BatchWorker(options_dict(options), str(tmp_path / "out"))
    prompts = _prompts(tmp_path / "one.json", [{"id": 1, "points": [[5, 5]]}])
    row = worker.run(BatchItem("x", "image", str(dataset / "photo.png"), str(prompts)))
    assert row["status"] == "failed" and row["error"] == "no weights at broken"
    assert loaded[2:] == ["image", "image"]  # at the start, then again for the line


# ------------------------------------------------------------------ on a local Ray cluster


def _needs_ray() -> None:
    pytest.importorskip("ray.data")


def _argv(manifest: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        "batch", str(manifest), "--out", str(out), "--formats", "json,zip",
        "--checkpoint", str(checkpoint), "--device", "cpu", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tracked(dataset: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """``sam2ui track`` outputs of the three videos, by manifest id."""
    root = tmp_path_factory.mktemp("tracked")
    clips = dataset / "clips"
    return {
        "a": _track(clips / "a.mp4", dataset / "one.json", root / "a", checkpoint),
        "b": _track(clips / "b.mp4", dataset / "two.json", root / "b", checkpoint),
        "7": _track(clips / "c", dataset / "one.json", root / "7", checkpoint),
    }


def test_batch_on_local_ray(
    dataset: Path, checkpoint: Path, tracked: dict[str, Path], tmp_path: Path, capsys
) -> None:
    _needs_ray()
    out = tmp_path / "out"
    argv = _argv(dataset / "manifest.jsonl", out, checkpoint)
    assert main(argv) == 1  # the corrupt video failed, the rest finished
    rows = _results(out)
    assert {k: r["status"] for k, r in rows.items()} == {
        "a": "ok", "b": "ok", "7": "ok", "photo": "ok", "broken": "failed"
    }  # fmt: skip
    assert "cannot read video" in rows["broken"]["error"]
    assert (rows["b"]["frames"], rows["b"]["objects"]) == (5, 2)
    assert (rows["7"]["frames"], rows["7"]["objects"]) == (3, 1)
    assert all(rows[k]["seconds"] > 0 and rows[k]["error"] is None for k in ("a", "b", "7"))
    for key, want in tracked.items():
        _same_track_output(out / key, want)
    assert sorted(p.name for p in out.iterdir()) == ["7", "a", "b", "photo", "results.jsonl"]
    err = capsys.readouterr().err
    assert "5 line(s) to run on 1 worker(s), 2 CPU(s) each" in err
    assert "[5/5]" in err and "ETA" in err
    assert "broken: failed: cannot read video" in err

    # A rerun skips what is done and tries the failed line again.
    assert main(argv) == 1
    rows = _results(out)
    assert [rows[k]["status"] for k in ("a", "b", "7", "photo")] == ["skipped"] * 4
    assert rows["broken"]["status"] == "failed"
    assert "4 skipped (done before), 1 failed" in capsys.readouterr().out

    # Once the video is repaired, the next rerun completes the job.
    _mp4(dataset / "clips" / "broken.mp4", 3)
    try:
        assert main(argv) == 0
    finally:
        (dataset / "clips" / "broken.mp4").write_bytes(b"no video")
    rows = _results(out)
    assert rows["broken"]["status"] == "ok" and rows["a"]["status"] == "skipped"
    assert json.loads((out / "broken" / "masks.json").read_text())["video_frame_count"] == 3


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "sam2ui", *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, as a terminal's job is
        )


def _wait_for(condition, proc: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"never happened; the run said:\n{log.read_text()}")
        time.sleep(0.02)


def _ray_workers() -> list[int]:
    """PIDs of this machine's Ray Data map workers (their process titles name them)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::MapWorker"):
                pids.append(int(entry.name))
    return pids


def _stat(path: str) -> list[str]:
    """The fields of a /proc ``stat`` file after the command name (state, parent, ...)."""
    return Path(path).read_text().rpartition(")")[2].split()


def _threads(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread of the process ``pid``: (its scheduling policy, its CPU ticks so far)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = _stat(f"{task}/stat")
            threads[int(task.name)] = (
                os.sched_getscheduler(int(task.name)),
                int(fields[11]) + int(fields[12]),
            )
        except OSError:  # the thread ended
            continue
    return threads


def _parent(pid: int) -> int:
    return int(_stat(f"/proc/{pid}/stat")[1])


_CLIPS = {"a": ("a.mp4", "one.json"), "b": ("b.mp4", "two.json"), "7": ("c", "one.json")}


def _many(dataset: Path, tmp_path: Path, keys: str, copies: int) -> Path:
    """A manifest of the videos ``keys`` (of "a", "b", "7"), ``copies`` times over, under the
    ids ``<key>-<n>``."""
    lines = [
        {
            "id": f"{key}-{n}",
            "video": str(dataset / "clips" / _CLIPS[key][0]),
            "prompts": str(dataset / _CLIPS[key][1]),
        }
        for n in range(copies)
        for key in keys
    ]
    manifest = tmp_path / "many.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_worker_is_replaced(
    dataset: Path, checkpoint: Path, tracked: dict[str, Path], tmp_path: Path
) -> None:
    _needs_ray()
    out, log = tmp_path / "out", tmp_path / "log.txt"
    proc = _start(_argv(_many(dataset, tmp_path, "ab", 1), out, checkpoint), log)
    try:
        _wait_for(lambda: out.is_dir() and any(out.glob(f"{PARTIAL_PREFIX}*")), proc, log)
        workers = _ray_workers()
        assert workers, log.read_text()
        # At the normal priority, not Ray's niceness 15 for workers (below its daemons).
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in workers} == {os.nice(0)}
        if os.sched_getscheduler(0) == os.SCHED_OTHER:
            # The local cluster's processes at SCHED_BATCH, the tracking threads not.
            for pid in workers:
                threads = _threads(pid)
                busiest = max(threads, key=lambda tid: threads[tid][1])
                assert threads[busiest][0] == os.SCHED_OTHER, threads
                assert os.SCHED_BATCH in {policy for policy, _ in threads.values()}, threads
                raylet = _parent(pid)
                assert Path(f"/proc/{raylet}/comm").read_text().strip() == "raylet"
                assert os.sched_getscheduler(raylet) == os.SCHED_BATCH
        for pid in workers:
            os.kill(pid, signal.SIGKILL)  # in the middle of a video
        assert proc.wait(timeout=300) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows = _results(out)
    assert [rows[f"{k}-0"]["status"] for k in "ab"] == ["ok"] * 2
    for key in "ab":
        _same_track_output(out / f"{key}-0", tracked[key])
    assert not list(out.glob(f"{PARTIAL_PREFIX}*"))


def test_ctrl_c_leaves_nothing_half_done(
    dataset: Path, checkpoint: Path, tracked: dict[str, Path], tmp_path: Path
) -> None:
    _needs_ray()
    out, log = tmp_path / "out", tmp_path / "log.txt"
    argv = _argv(_many(dataset, tmp_path, "7", 4), out, checkpoint)
    proc = _start(argv, log)
    try:
        results = out / "results.jsonl"
        _wait_for(lambda: results.is_file() and '"ok"' in results.read_text(), proc, log)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in a terminal sends
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    said = log.read_text()
    assert "interrupted with" in said and "Rerun the same command to resume" in said
    rows = _results(out)
    assert len(rows) == 4
    done = {k for k, r in rows.items() if r["status"] == "ok"}
    assert 1 <= len(done) < 4
    assert {r["error"] for k, r in rows.items() if k not in done} == {"interrupted"}
    finished = {p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert finished >= done
    for name in finished:  # every folder under an id's name is complete
        _same_track_output(out / name, tracked[name.split("-")[0]])
    # The rerun finishes the job and skips what was done.
    assert main(argv) == 0
    rows = _results(out)
    assert {k for k, r in rows.items() if r["status"] == "skipped"} == finished
    assert all(r["status"] in ("ok", "skipped") for r in rows.values())
    assert not list(out.glob(f"{PARTIAL_PREFIX}*"))
