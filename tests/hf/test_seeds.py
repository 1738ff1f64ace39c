"""Every transformers snippet of the seeds (the documentation sam2ui was made from), run as written
with ``from transformers import`` replaced by ``from sam2ui.hf import``.

The snippets are read from the seed files themselves; each page runs top to bottom in one
namespace, as its reader would (later blocks use names of earlier ones). What cannot be had
here is replaced, and nothing else:

* hub ids become a local random-weight folder written by transformers' ``save_pretrained``;
* downloads (``requests``, ``httpx``, ``urllib``, ``load_video``) return small synthetic
  pictures and a short synthetic video, so sizes and frame counts differ from the printed ones;
* ``device=0`` (the first GPU) becomes the CPU, the refinement frame 50 of a 180-frame
  video becomes frame 2 of the 3-frame one, and the pipeline's grid of points is 8 x 8;
* three bugs of the seeds themselves are fixed as transformers itself would need them fixed: a
  missing parenthesis and an undefined ``device`` in the Sam2VideoModel page, and a
  ``Sam2Config`` used without being imported in the Sam2Config example.

The ``AutoModel`` example of the Sam2Model reference passes points nested three levels deep,
which transformers refuses; so does sam2ui.hf, naming the level.
"""

from __future__ import annotations

import io
import os
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def _seeds() -> Path:
    """The seed documents: $SAM2UI_SEEDS, else the nearest shared/seeds folder beside the
    checkout or one of the folders above it (where the project keeps them); the tests skip
    when there is none."""
    if os.environ.get("SAM2UI_SEEDS"):
        return Path(os.environ["SAM2UI_SEEDS"])
    checkout = Path(__file__).resolve().parents[2]
    for folder in checkout.parents:
        if (folder / "shared" / "seeds").is_dir():
            return folder / "shared" / "seeds"
    return checkout.parent / "shared" / "seeds"


SEEDS = _seeds()
# (height, width) of the synthetic picture each URL stands for, by a word of the URL.
PICTURES = {"truck": (150, 225), "dog": (120, 160), "groceries": (96, 128), "car": (100, 150)}
VIDEO_FRAMES, VIDEO_SIZE = 3, (120, 160)


def _seed_files() -> list[Path]:
    return sorted(SEEDS.glob("*.txt")) if SEEDS.is_dir() else []


def _code(block: str) -> str:
    """A block's code: doctest prompts removed and printed output dropped."""
    lines = block.splitlines()
    if not any(line.startswith(">>>") for line in lines):
        return block
    code = []
    for line in lines:
        if line.startswith((">>> ", "... ")):
            code.append(line[4:])
        elif line in (">>>", "..."):
            code.append("")
    return "\n".join(code)


def snippet_pages() -> list[tuple[str, list[tuple[str, str]]]]:
    """Per seed file, its (heading, code) blocks from the first one that imports from
    transformers on (Meta's API before it is not this module's), in order: a page is run
    top to bottom in one namespace, as its reader would."""
    pages = []
    for path in _seed_files():
        text = path.read_text(encoding="utf-8")
        blocks: list[tuple[str, str]] = []
        for match in re.finditer(r"```(py|python)\n(.*?)```", text, flags=re.S):
            code = _code(match.group(2))
            headings = re.findall(r"^#+ (.+)$", text[: match.start()], flags=re.M)
            started = blocks or "from transformers" in code
            if started and code.strip() and "from sam2." not in code:
                blocks.append((headings[-1] if headings else "", code))
        if blocks:
            pages.append((path.stem, blocks))
    return pages


def _without_output(code: str, where: str) -> str:
    """Plain (non-doctest) blocks show printed output as bare lines: drop the lines Python
    cannot read, one at a time, until the block compiles."""
    lines = code.splitlines()
    for _ in range(len(lines)):
        try:
            compile("\n".join(lines), where, "exec")
            break
        except SyntaxError as exc:
            if exc.lineno is None or not 1 < exc.lineno <= len(lines):
                raise
            # Only what a print() just before it shows: a broken line of code still fails.
            if not lines[exc.lineno - 2].lstrip().startswith("print("):
                raise
            del lines[exc.lineno - 1]
    return "\n".join(lines)


def _adapted(code: str, folder: Path) -> str:
    code = code.replace("from transformers.video_utils import load_video\n", "")
    code = code.replace("from transformers import", "from sam2ui.hf import")
    code = re.sub(r"\"(facebook|danelcsb)/[^\"]+\"", repr(str(folder)), code)
    code = code.replace("device=0)", "device=-1)")
    code = code.replace("refine_frame_idx = 50", "refine_frame_idx = 2")
    code = code.replace('dtype="auto"\n', 'dtype="auto")\n')  # seed 000: missing ")"
    code = code.replace("    Sam2Model,\n)", "    Sam2Model,\n    Sam2Config,\n)")  # not imported
    return code


def _png(url: str) -> bytes:
    word = next((w for w in PICTURES if w in url), "truck")
    height, width = PICTURES[word]
    yy, xx = np.mgrid[0:height, 0:width]
    picture = np.stack([(xx * 2) % 256, (yy * 3) % 256, (xx + yy) % 256], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(picture.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Response:
    def __init__(self, url: str) -> None:
        self.raw = io.BytesIO(_png(url))

    def read(self) -> bytes:
        return self.raw.getvalue()

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _load_video(url: str) -> tuple[np.ndarray, dict[str, Any]]:
    height, width = VIDEO_SIZE
    yy, xx = np.mgrid[0:height, 0:width]
    frames = [
        np.stack([(xx * 2 + 9 * t) % 256, (yy * 3) % 256, (xx + yy) % 256], axis=-1)
        for t in range(VIDEO_FRAMES)
    ]
    return np.stack(frames).astype(np.uint8), {"fps": 24}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads answered with synthetic pictures; "segment everything" on an 8 x 8 grid of
    points instead of 32 x 32 (1024 prompts would take a minute on two cores)."""
    from sam2ui.hf import MaskGenerationPipeline

    call = MaskGenerationPipeline.__call__
    monkeypatch.setattr(
        MaskGenerationPipeline,
        "__call__",
        lambda self, image, **kw: call(self, image, **{"points_per_crop": 8, **kw}),
    )
    requests = types.ModuleType("requests")
    requests.get = lambda url, stream=False, **kw: _Response(url)  # type: ignore[attr-defined]
    httpx = types.ModuleType("httpx")
    httpx.stream = lambda method, url, **kw: _Response(url)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "requests", requests)
    monkeypatch.setitem(sys.modules, "httpx", httpx)
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: _Response(url))


PAGES = snippet_pages()


def test_the_seeds_have_the_snippets() -> None:
    if not PAGES:
        pytest.skip("the seed documents are not on this machine")
    headings = " | ".join(h for _, blocks in PAGES for h, _ in blocks)
    for heading in ("Automatic Mask Generation", "Single Point Click", "Batched Images",
                    "Using Previous Masks", "Basic Video Tracking", "Streaming Video Inference",
                    "Video Batch Processing", "SAM2 Video", "Sam2Config"):  # fmt: skip
        assert heading in headings, headings


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(("page", "blocks"), PAGES, ids=[page[:3] for page, _ in PAGES])
def test_page(page: str, blocks: list[tuple[str, str]], video_folder: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "seed", "load_video": _load_video, "device": "cpu"}
    for heading, code in blocks:
        where = f"{page}: {heading}"
        source = _without_output(_adapted(code, video_folder), where)
        if "AutoModel" in source:
            with pytest.raises(ValueError, match="input_points must be nested 4 levels deep"):
                exec(compile(source, where, "exec"), namespace)
            continue
        exec(compile(source, where, "exec"), namespace)
        _check(namespace, where)


def _check(ns: dict[str, Any], where: str) -> None:
    """What the snippet prints, for the synthetic inputs; each name is checked once."""
    if "video_segments" in ns:
        assert len(ns.pop("video_segments")) == VIDEO_FRAMES, where
        session = ns["inference_session"]
        assert (session.video_height, session.video_width) == VIDEO_SIZE, where
    if "all_masks" in ns:
        sizes = [tuple(m.shape[-2:]) for m in ns.pop("all_masks")]
        assert sizes == [tuple(s) for s in ns["inputs"]["original_sizes"].tolist()], where
    if "masks" in ns and "raw_image" in ns:
        assert tuple(ns.pop("masks").shape[-2:]) == PICTURES["truck"], where
    if isinstance(ns.get("outputs"), dict):
        assert set(ns.pop("outputs")) == {"masks", "scores"}, where
