"""Starting the app: `sam2ui` (no command, `app`, options only), spaces_app.py, ZeroGPU glue."""

from __future__ import annotations

import importlib.util
import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sam2ui import cli
from sam2ui.app import launcher
from sam2ui.app.launcher import launch_options
from sam2ui.app.options import DEFAULT_MODEL, AppConfig
from sam2ui.app.zerogpu import offload_state, on_zero_gpu, run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[AppConfig]:
    """Replace the real launch; collect the configs it would have started."""
    configs: list[AppConfig] = []
    monkeypatch.setattr(launcher, "launch", lambda config, **kw: configs.append(config))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    return configs


def test_sam2ui_alone_starts_the_app(
    launched: list[AppConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["sam2ui"])
    assert cli.main() == 0
    (config,) = launched
    assert config.model == DEFAULT_MODEL and config.host == "127.0.0.1" and config.port == 7860
    assert config.device == "auto" and config.dtype == "float32"
    assert cli.main([]) == 0  # an empty argument list from a program: the same
    assert launched[1] == config


def test_options_without_a_command_start_the_app(launched: list[AppConfig]) -> None:
    argv = ["--port", "8000", "--model", "sam2.1-hiera-small", "--dtype", "bfloat16"]
    assert cli.main([*argv, "--max-video-seconds", "12", "--idle-timeout", "60"]) == 0
    assert cli.main(["app", "--host", "0.0.0.0", "--max-video-frames", "300"]) == 0
    first, second = launched
    assert (first.port, first.model, first.dtype) == (
        8000,
        "facebook/sam2.1-hiera-small",
        "bfloat16",
    )
    assert (first.max_video_seconds, first.idle_timeout_s) == (12, 60)
    assert second.host == "0.0.0.0" and second.max_video_frames == 300


def test_compile_option_compiles_the_shared_model_once_at_load(
    launched: list[AppConfig], monkeypatch: pytest.MonkeyPatch, small_cache
) -> None:
    from sam2ui.app import context

    assert cli.main(["--compile"]) == 0 and cli.main([]) == 0
    assert [config.compile for config in launched] == [True, False]

    # The shared test model must stay eager (other tests use it): stand-ins record the calls.
    compiled: list[object] = []
    warmed: list[str] = []
    monkeypatch.setattr(context, "compile_model", compiled.append)
    monkeypatch.setattr(context, "is_compiled", lambda model: model in compiled)
    monkeypatch.setattr(context, "warm_up", lambda p: warmed.append(type(p).__name__) or 1.5)
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", port=None, compile=True)
    ctx = context.AppContext(config, cache=small_cache)
    try:
        assert ctx.load_model() and ctx.load_model()  # the second finds it compiled
    finally:
        ctx.close()
    assert compiled == [small_cache.get_video_model("sam2.1-hiera-tiny", "cpu")]
    # Both kinds of work warmed up before the first visitor: tracking, then a still image.
    assert warmed == ["SAM2VideoPredictor", "SAM2ImagePredictor"]


def test_local_checkpoint_and_bad_options(
    launched: list[AppConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(b"x")
    assert cli.main(["app", "--checkpoint", str(ckpt)]) == 0
    assert launched[0].model == str(ckpt)
    for argv, message in [
        (["app", "--checkpoint", str(tmp_path / "nope.pt")], "checkpoint not found"),
        (["--model", "sam3-huge"], "sam3-huge"),
        (["--max-video-mb", "0"], "must be > 0"),
    ]:
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_without_gradio_the_command_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a)
    )
    assert cli.main(["app"]) == 1
    assert 'pip install "sam2ui[app]"' in capsys.readouterr().err


def test_spaces_app_starts_the_same_app(
    launched: list[AppConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["spaces_app.py", "--port", "9000"])
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # what a Space sets
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(REPO / "spaces_app.py"), run_name="__main__")
    assert exc.value.code == 0
    (config,) = launched
    assert config.model == DEFAULT_MODEL and config.port == 9000 and config.host == "0.0.0.0"


def test_launch_options() -> None:
    opts = launch_options(AppConfig(host="127.0.0.1", port=None, max_video_mb=50))
    assert opts["server_name"] == "127.0.0.1" and opts["server_port"] is None
    assert opts["max_file_size"] == "116mb"  # above the video limit: our message, not gradio's
    assert opts["show_error"] is False  # gradio's own error text never reaches a browser
    with pytest.raises(ValueError, match="model_workers"):
        AppConfig(model_workers=0)


@pytest.mark.skipif(os.name != "posix", reason="pid checks are POSIX")
def test_launch_removes_the_folders_of_a_killed_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from sam2ui.core import scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    root = scratch.scratch_root()
    stale = root / f"sam2ui-video-{int(gone.stdout)}-x1"
    stale.mkdir()
    (stale / "masks.zip").write_bytes(b"zip")
    started: list[dict] = []

    class Demo:
        def launch(self, **options: object) -> None:
            started.append(options)

    monkeypatch.setattr(launcher, "build_demo", lambda config: Demo())
    monkeypatch.setattr(launcher, "exit_on_sigterm", lambda: False)  # not in the test runner
    monkeypatch.setenv("SAM2UI_SWITCH_INTERVAL_MS", "0.25")
    before = sys.getswitchinterval()
    try:
        launcher.launch(AppConfig(port=None), prevent_thread_lock=True)
        # A serving process hands the interpreter lock between threads more often.
        assert sys.getswitchinterval() == pytest.approx(0.00025)
    finally:
        sys.setswitchinterval(before)
    assert started and started[0]["show_error"] is False
    assert not stale.exists() and root.is_dir()


def test_zero_gpu_glue_is_a_no_op_off_zero_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def work(x: int) -> int:  # a local function: it could not be pickled for a worker
        calls.append(x)
        return x + 1

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not on_zero_gpu() and not offload_state()
    assert run(work, 1) == 2 and calls == [1]  # called here, directly
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert on_zero_gpu() == (importlib.util.find_spec("spaces") is not None)


def test_sam2ui_app_imports_without_gradio_or_torch() -> None:
    import subprocess

    code = (
        "import sys\n"
        "sys.modules['gradio'] = None  # as if not installed\n"
        "import sam2ui.app.options, sam2ui.cli\n"
        "sam2ui.cli.build_parser().parse_args(['app', '--port', '1'])\n"
        "print(sorted(m for m in ('torch', 'gradio') if sys.modules.get(m)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


_SERVER = """
import signal, sys, torch
from sam2ui.app.launcher import exit_on_sigterm
from sam2ui.core import make_folder
from sam2ui.core.video.spill import SpillStore
if sys.argv[1] == "reset":  # as a shell that started the server without job control
    signal.signal(signal.SIGINT, signal.SIG_DFL)
assert exit_on_sigterm() and not exit_on_sigterm()  # installed once; a second is left alone
store = SpillStore()
store.put(1, 0, torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 2, 2))
downloads = make_folder("image")
(downloads / "masks.zip").write_bytes(b"zip")
print(store.directory, downloads, flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGTERM is POSIX")
@pytest.mark.parametrize(
    ("sig", "sigint", "status"),
    [
        (signal.SIGTERM, "keep", 128 + signal.SIGTERM),
        (signal.SIGINT, "keep", -signal.SIGINT),  # KeyboardInterrupt: Python exits by SIGINT
        (signal.SIGINT, "reset", -signal.SIGINT),
    ],
)
def test_signals_stop_the_server_like_ctrl_c(tmp_path, sig, sigint, status) -> None:
    """Hosts stop servers with SIGTERM, people with Ctrl-C: the app exits cleanly, deleting
    sessions' folders (downloads and video memories)."""
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, sigint], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    folders = proc.stdout.readline().split()
    assert len(folders) == 2
    for folder in folders:
        assert folder.startswith(str(tmp_path / f"sam2ui-{os.getuid()}")) and os.path.isdir(folder)
    proc.send_signal(sig)
    assert proc.wait(60) == status
    assert [f for f in folders if os.path.exists(f)] == []
