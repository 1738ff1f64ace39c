"""The dependency ranges have one source (pyproject.toml) and the files made from it agree."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def deps() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deps", ROOT / "scripts" / "deps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_txt_is_generated_from_pyproject(deps: ModuleType) -> None:
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    assert text == deps.space_requirements()
    listed = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert listed == deps.requirements(("video",))
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "deps.py"), "requirements", "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout


def test_every_runtime_dependency_has_a_tested_floor(deps: ModuleType) -> None:
    runtime = deps.requirements(("video", "app", "notebook"))
    assert {deps.canonical(r.split(">")[0].split("[")[0]) for r in runtime} >= {
        "torch",
        "numpy",
        "pillow",
        "safetensors",
        "huggingface-hub",
        "av",
        "gradio",
        "ipywidgets",
        "anywidget",
    }
    without_floor = [r for r in runtime if deps.lower_bound(r) is None]
    assert without_floor == []


def test_lowest_pins_each_floor_once_and_leaves_torch_alone(deps: ModuleType) -> None:
    engine = deps.lowest(("video",))
    front_ends = deps.lowest(("video", "app", "notebook"))
    assert "torch" not in engine and "torch" not in front_ends
    assert engine["av"] == front_ends["av"] == "12"
    # The app's gradio needs a newer huggingface_hub than the engine does: the higher wins.
    assert deps._release(front_ends["huggingface-hub"]) > deps._release(engine["huggingface-hub"])
    assert front_ends["gradio"] == "6.19"
    names = deps.requirements(("video", "app", "notebook"), each_once=True)
    assert len(names) == len({deps.canonical(n.split(">")[0].split("[")[0]) for n in names})


def test_floors_and_names_agree_with_a_hand_written_project(
    deps: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[project]\n"
        'name = "demo"\n'
        'dependencies = ["torch>=2.1", "numpy>=1.26,<3", "Pillow"]\n'
        "[project.optional-dependencies]\n"
        'extra = ["numpy>=2.0.1", "some_thing>=0.10"]\n'
        'all = ["demo[extra]", "other>=1"]\n',
        encoding="utf-8",
    )
    monkeypatch.setattr(deps, "PYPROJECT", pyproject)
    assert deps.lowest(("all",)) == {"numpy": "2.0.1", "some-thing": "0.10", "other": "1"}
    assert deps.requirements(("all",)) == [
        "torch>=2.1",
        "numpy>=1.26,<3",
        "Pillow",
        "some_thing>=0.10",
        "other>=1",
    ]
    with pytest.raises(SystemExit, match="no extra 'nope'"):
        deps.requirements(("nope",))
