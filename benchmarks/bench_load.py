"""Many people on one server: click latency under load, and no cross-talk.

Starts the app (``python -m sam2ui app``) in its own process on sam2.1-hiera-tiny with random
weights (no download), then drives it from threads of this process, each user with its own
client: by default ``benchmarks/gradio_wire.py``, which speaks Gradio's queue protocol as a
browser does; with ``--client gradio_client``, Gradio's own Python client, which adds tens of
milliseconds of its own to every call:

1. **alone**: each user's work, one user at a time, as the reference answers;
2. **together**: ``--users`` users at once, each uploading ``--images`` pictures and clicking
   ``--clicks`` times on each (``/image_upload``, then ``/image_click``);
3. **beside a propagation**: the same, while one more user tracks a ``--video-frames`` video
   (``/video_upload``, ``/video_click``, ``/video_propagate``).

It prints p50 / p95 / max per endpoint for each phase, and the cross-talk check: every
click's masks (the COCO RLE the endpoint returns) compared with the same click made alone.
A probe calls ``/image_cancel`` (no model work) every 0.2 s throughout: its round trip is
what gradio and the client alone cost under the same load, the floor under a click's.

    python benchmarks/bench_load.py --users 8 --images 3 --clicks 6
    python benchmarks/bench_load.py --users 8 --images 3 --clicks 6 --client gradio_client
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_app import synthetic_image  # noqa: E402

CLICK_P95_TARGET_MS = 300.0


def build_checkpoint(folder: Path) -> Path:
    """sam2.1-hiera-tiny at the official input size, perturbed random weights, Meta's .pt."""
    import torch

    from sam2ui.core import build_sam2, get_config
    from tests.reference_models import perturbed_state_dict, save_meta_checkpoint

    torch.manual_seed(0)
    model = build_sam2(replace(get_config("sam2.1-hiera-tiny")))
    return save_meta_checkpoint(perturbed_state_dict(model, seed=0), folder / "tiny.pt")


def write_video(path: Path, frames: int, height: int = 360, width: int = 640) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        base = synthetic_image(height, width, seed=99)
        for i in range(frames):
            img = np.roll(base, 4 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(checkpoint: Path, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sam2ui", "app", "--checkpoint", str(checkpoint)]
    cmd += ["--device", "cpu", "--port", str(port), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start in 120 s")


class Timings:
    def __init__(self, client: str) -> None:
        self.client = client  # which client the users take: a key of CLIENTS
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def call(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            out = fn()
        except Exception as err:
            with self._lock:
                self.failures.append(f"{endpoint}: {err}")
            raise
        with self._lock:
            self.ms[endpoint].append((time.perf_counter() - start) * 1e3)
        return out


class GradioClient:
    """``gradio_client.Client`` behind the calls of ``gradio_wire.WireClient``."""

    def __init__(self, url: str) -> None:
        from gradio_client import Client

        # Masks come back as COCO RLE: the rendered pictures need not be downloaded.
        self.client = Client(url, verbose=False, download_files=False)

    def upload(self, path: Path) -> Any:
        from gradio_client import handle_file

        return handle_file(str(path))  # sent by the call that takes it, and timed with it

    def predict(self, api_name: str, *data: Any) -> Any:
        return list(self.client.predict(*data, api_name=api_name))

    def steps(self, api_name: str, *data: Any) -> int:
        job = self.client.submit(*data, api_name=api_name)
        job.result()
        return len(job.outputs())

    def close(self) -> None:
        self.client.close()


CLIENTS = {"wire": "the queue protocol, as a browser", "gradio_client": "Gradio's Python client"}


def connect(url: str, kind: str) -> Any:
    if kind == "gradio_client":
        return GradioClient(url)
    from benchmarks.gradio_wire import WireClient

    return WireClient(url)


def cpu_ticks(pid: int | str) -> tuple[str, int]:
    """(name, CPU ticks used so far: user + system, every thread) of a process, from
    ``/proc/<pid>/stat``; Linux only."""
    head, tail = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
    fields = tail.split()  # from the state on: utime and stime are the 12th and 13th
    return head.split("(", 1)[-1], int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far; Linux only."""
    return cpu_ticks(pid)[1] / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_used(server: int, lines: list[str]) -> Any:
    """Append how much CPU the clients (this process) and the server used over the block:
    on a small machine the clients' own share is taken from the server's."""
    try:
        before = cpu_seconds(os.getpid()), cpu_seconds(server), time.perf_counter()
    except (OSError, ValueError, IndexError):
        yield
        return
    yield
    clients = cpu_seconds(os.getpid()) - before[0]
    wall = time.perf_counter() - before[2]
    lines.append(
        f"- CPU over the phase's {wall:.0f} s: clients {clients:.1f} s "
        f"({clients / wall:.2f} of a core), server {cpu_seconds(server) - before[1]:.1f} s"
    )


def user_plan(user: int, images: int, clicks: int, folder: Path) -> list[tuple[Path, list]]:
    """The user's pictures (files) and clicks ``(x, y, positive)`` on each."""
    rng = np.random.default_rng(user)
    plan = []
    for i in range(images):
        h, w = (720, 1280) if (user + i) % 2 == 0 else (1080, 1440)
        path = folder / f"user{user}_image{i}.png"
        if not path.exists():
            from PIL import Image

            Image.fromarray(synthetic_image(h, w, seed=100 * user + i)).save(path)
        pts = [
            (float(rng.uniform(0.1, 0.9) * w), float(rng.uniform(0.1, 0.9) * h), k % 3 != 2)
            for k in range(clicks)
        ]
        plan.append((path, pts))
    return plan


def run_user(url: str, plan: list[tuple[Path, list]], timings: Timings) -> list[dict]:
    """Upload each picture and click on it; each click's masks (COCO RLE per object)."""
    client = connect(url, timings.client)
    results = []
    try:
        for path, pts in plan:
            timings.call(
                "/image_upload",
                lambda p=path: client.predict("/image_upload", client.upload(p)),
            )
            for x, y, positive in pts:
                out = timings.call(
                    "/image_click",
                    lambda a=(x, y, positive): client.predict("/image_click", 0, *a),
                )
                results.append(out[-1])
    finally:
        client.close()
    return results


def run_tracker(url: str, video: Path, timings: Timings, done: threading.Event) -> int:
    """Upload the video, click on frame 0, propagate to the end; frames tracked."""
    client = connect(url, timings.client)
    try:
        timings.call("/video_upload", lambda: client.predict("/video_upload", client.upload(video)))
        timings.call(
            "/video_click", lambda: client.predict("/video_click", 0, 0, 300.0, 180.0, True)
        )
        steps: int = timings.call(
            "/video_propagate", lambda: client.steps("/video_propagate", "forward")
        )
        return steps
    finally:
        done.set()
        client.close()


PROBE = "/image_cancel (floor)"


def run_probe(url: str, timings: Timings, done: threading.Event) -> None:
    """Call ``/image_cancel`` (no session, no model: it answers "Nothing is running.") every
    0.2 s until ``done``: the round trip of gradio and its client alone, under the same load."""
    client = connect(url, timings.client)
    try:
        while not done.wait(0.2):
            timings.call(PROBE, lambda: client.predict("/image_cancel"))
    finally:
        client.close()


@contextlib.contextmanager
def probing(url: str, timings: Timings) -> Any:
    done = threading.Event()
    probe = threading.Thread(target=run_probe, args=(url, timings, done))
    probe.start()
    try:
        yield
    finally:
        done.set()
        probe.join()


def run_together(
    url: str, plans: list, video: Path | None, client: str
) -> tuple[Timings, list, float]:
    timings = Timings(client)
    results: list[list[dict]] = [[] for _ in plans]
    tracked = threading.Event()
    tracker = None
    if video is not None:
        tracker = threading.Thread(target=run_tracker, args=(url, video, timings, tracked))
        tracker.start()
        while "/video_click" not in timings.ms and not tracked.is_set():
            time.sleep(0.05)  # the users start once the propagation does
    start = time.perf_counter()

    def one(i: int) -> None:
        with contextlib.suppress(Exception):  # counted in timings.failures
            results[i] = run_user(url, plans[i], timings)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(plans))]
    with probing(url, timings):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    if tracker is not None:
        tracker.join()
    return timings, results, wall


def same_masks(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)


def lowest_iou(pairs: list[tuple[dict, dict]]) -> float:
    """The lowest IoU of one object's mask between two runs (1.0: all identical)."""
    from sam2ui.core import rle_to_mask

    low = 1.0
    for a, b in pairs:
        for k in set(a) | set(b):
            if k not in a or k not in b:
                return 0.0
            x, y = rle_to_mask(a[k]), rle_to_mask(b[k])
            union = (x | y).sum()
            low = min(low, float((x & y).sum() / union) if union else 1.0)
    return low


def report(
    title: str, timings: Timings, results: list, alone: list, wall: float, cpu: list[str]
) -> list[str]:
    lines = [f"### {title} ({wall:.1f} s)", "", "| endpoint | calls | p50 ms | p95 ms | max ms |"]
    lines.append("|---|---:|---:|---:|---:|")
    for endpoint, ms in sorted(timings.ms.items()):
        p95 = float(np.percentile(ms, 95))
        lines.append(
            f"| {endpoint} | {len(ms)} | {statistics.median(ms):.0f} | {p95:.0f} | {max(ms):.0f} |"
        )
    pairs = [
        (x, y)
        for got, ref in zip(results, alone, strict=True)
        for x, y in zip(got, ref, strict=False)
    ]
    same = sum(same_masks(x, y) for x, y in pairs)
    total = sum(len(r) for r in alone)
    clicks = timings.ms.get("/image_click", [0.0])
    click_p95 = float(np.percentile(clicks, 95))
    lines += [
        "",
        f"- cross-talk: {same}/{total} clicks gave the same masks as alone "
        f"(lowest IoU {lowest_iou(pairs):.5f})",
        f"- failed requests: {len(timings.failures)}"
        + (f" (first: {timings.failures[0]})" if timings.failures else ""),
        f"- click p95 {click_p95:.0f} ms, target <= {CLICK_P95_TARGET_MS:.0f}: "
        + ("met" if click_p95 <= CLICK_P95_TARGET_MS else "NOT met"),
        *cpu,
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--clicks", type=int, default=6)
    parser.add_argument("--video-frames", type=int, default=60, help="0: skip phase 3")
    parser.add_argument("--server-args", default="", help="more options for `sam2ui app`")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="wire",
        help="wire: " + CLIENTS["wire"] + "; gradio_client: " + CLIENTS["gradio_client"],
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="sam2ui-bench-load-") as tmp:
        folder = Path(tmp)
        checkpoint = build_checkpoint(folder)
        plans = [user_plan(u, args.images, args.clicks, folder) for u in range(args.users)]
        video = write_video(folder / "walk.mp4", args.video_frames) if args.video_frames else None
        port = free_port()
        server = start_server(checkpoint, port, shlex.split(args.server_args))
        url = f"http://127.0.0.1:{port}/"
        try:
            alone_t = Timings(args.client)
            cpu: list[str] = []
            start = time.perf_counter()
            with cpu_used(server.pid, cpu), probing(url, alone_t):
                alone = [run_user(url, plan, alone_t) for plan in plans]
            alone_wall = time.perf_counter() - start
            lines = [f"`{shlex.join(['python', 'benchmarks/bench_load.py', *sys.argv[1:]])}`", ""]
            lines += [f"Client: {args.client} ({CLIENTS[args.client]}), one per user.", ""]
            lines += report("one user at a time", alone_t, alone, alone, alone_wall, cpu)
            phases = [(f"{args.users} users at once", None)]
            if video is not None:
                title = f"{args.users} users at once beside a {args.video_frames}-frame propagation"
                phases.append((title, video))
            for title, clip in phases:
                cpu = []
                with cpu_used(server.pid, cpu):
                    t, res, wall = run_together(url, plans, clip, args.client)
                lines += report(title, t, res, alone, wall, cpu)
        finally:
            server.terminate()
            server.wait(30)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
