"""Exports: DAVIS PNG zips, SA-V masklet JSON (against pycocotools), overlay MP4s (decoded back
with PyAV) and single-image overlays. All data is tiny and synthetic, written to tmp dirs."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask

from sam2ui.core import exports as E
from sam2ui.core import render as R
from sam2ui.core.annotate import prompt_file as P

H, W = 47, 65  # odd on purpose


def box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def sample_results() -> dict[int, dict[int, np.ndarray]]:
    """Frames 0, 2, 5 (skips); object 7 appears at frame 2; object 3 vanishes at frame 5."""
    return {
        0: {1: box(2, 12, 3, 20), 3: box(30, 40, 40, 60)},
        2: {1: box(4, 14, 5, 22), 3: box(31, 41, 41, 61), 7: box(20, 25, 0, 10)},
        5: {1: box(6, 16, 7, 24), 7: box(21, 26, 1, 11)},
    }


def coco_rle(m: np.ndarray) -> dict:
    """pycocotools' compressed RLE of a bool mask, JSON-ready."""
    rle = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode()}


def read_png(zf: zipfile.ZipFile, name: str) -> Image.Image:
    return Image.open(io.BytesIO(zf.read(name)))


def top_level_boxes(data: bytes) -> list[str]:
    """Types of the top-level MP4 boxes, in file order."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        out.append(kind.decode("ascii"))
        if size == 0:
            break
        pos += size
    return out


# --------------------------------------------------------------------------------- palette


def test_davis_palette_known_entries():
    pal = R.davis_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    expected = {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        4: (0, 0, 128),
        5: (128, 0, 128),
        6: (0, 128, 128),
        7: (128, 128, 128),
        8: (64, 0, 0),
        9: (192, 0, 0),
        255: (224, 224, 192),
    }
    for i, rgb in expected.items():
        assert tuple(pal[i]) == rgb
    assert len({tuple(c) for c in pal}) == 256
    assert R.palette_color(1) == (128, 0, 0)
    assert R.palette_color(256) == R.palette_color(1)  # cycles, never background black
    with pytest.raises(ValueError, match="positive"):
        R.palette_color(0)


# --------------------------------------------------------------------------------- PNG zip


def test_davis_zip_exact_masks_and_layout(tmp_path: Path):
    res = sample_results()
    out = E.write_davis_png_zip(res, tmp_path / "m.zip", height=H, width=W)
    assert out == tmp_path / "m.zip" and not (tmp_path / "m.zip.part").exists()
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert [n for n in names if "/" not in n] == ["00000.png", "00002.png", "00005.png"]
        for f, objs in res.items():
            img = read_png(zf, f"{f:05d}.png")
            assert img.mode == "P" and img.size == (W, H)
            assert img.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
            expected = np.zeros((H, W), dtype=np.uint8)
            for oid, m in objs.items():
                expected[m] = oid
            np.testing.assert_array_equal(np.array(img), expected)
            # Per-object 1-bit PNGs for every frame, empty where the object is absent.
            for oid in (1, 3, 7):
                obj = read_png(zf, f"{oid:03d}/{f:05d}.png")
                assert obj.mode == "1"
                want = objs.get(oid, np.zeros((H, W), dtype=bool))
                np.testing.assert_array_equal(np.array(obj), want)
        assert len(names) == 3 + 3 * 3  # 007/00000.png was back-filled


def test_davis_zip_overlap_smallest_id_wins_and_streams(tmp_path: Path):
    a, b = box(0, 20, 0, 30), box(10, 30, 20, 50)  # overlap rows 10-19, cols 20-29
    frames = ((f, {5: b, 2: a}) for f in (3, 1))  # a generator, frames out of order
    E.write_davis_png_zip(frames, tmp_path / "o.zip", height=H, width=W)
    with zipfile.ZipFile(tmp_path / "o.zip") as zf:
        assert zf.namelist()[0] == "00003.png"  # written in arrival order
        got = np.array(read_png(zf, "00001.png"))
        assert (got[10:20, 20:30] == 2).all()
        assert got[25, 40] == 5 and got[5, 5] == 2 and got[40, 60] == 0
        np.testing.assert_array_equal(np.array(read_png(zf, "005/00001.png")), b)
        np.testing.assert_array_equal(np.array(read_png(zf, "002/00003.png")), a)


def test_davis_zip_torch_masks_and_custom_palette(tmp_path: Path):
    pal = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 3))
    logits = torch.full((1, H, W), -3.0)
    logits[0, 5:9, 5:9] = 2.0
    res = {0: {4: logits.bfloat16()}}  # (1, H, W) logits, thresholded at 0
    E.write_davis_png_zip(res, tmp_path / "t.zip", height=H, width=W, palette=pal)
    with zipfile.ZipFile(tmp_path / "t.zip") as zf:
        img = read_png(zf, "00000.png")
        assert img.getpalette()[12:15] == [4, 4, 4]
        np.testing.assert_array_equal(np.array(img) == 4, box(5, 9, 5, 9))


def test_davis_zip_over_255_objects_switches_those_frames_to_16_bit(tmp_path: Path):
    # 300 objects on frame 1 (ids 1..300, one pixel each), frame 0 with small ids only.
    many = {}
    for oid in range(1, 301):
        m = np.zeros((H, W), bool)
        m[oid // W, oid % W] = True
        many[oid] = m
    res = iter([(0, {1: box(0, 5, 0, 5), 9: box(10, 20, 10, 20)}), (1, many)])
    path = E.write_davis_png_zip(res, tmp_path / "big.zip", height=H, width=W)
    with zipfile.ZipFile(path) as zf:
        small, large = read_png(zf, "00000.png"), read_png(zf, "00001.png")
        assert small.mode == "P" and small.getpalette()[27:30] == list(R.DAVIS_PALETTE[9])
        assert large.mode in ("I;16", "I") and large.getpalette() is None
        ids = np.array(large)
        for oid, m in many.items():
            assert (ids[m] == oid).all()
        assert int(ids.max()) == 300 and int((ids > 0).sum()) == 300
        np.testing.assert_array_equal(np.array(read_png(zf, "300/00001.png")), many[300])
        assert not np.array(read_png(zf, "300/00000.png")).any()
    with pytest.raises(ValueError, match="65536 does not fit a 16-bit PNG"):
        E.indexed_png({65536: box(0, 5, 0, 5)}, H, W)


def test_image_zip_over_255_objects(tmp_path: Path):
    masks = {oid: box(oid % H, oid % H + 1, 0, 3) for oid in (1, 255, 256, 4000)}
    path = E.write_image_masks_zip(masks, tmp_path / "m.zip")
    with zipfile.ZipFile(path) as zf:
        picture = read_png(zf, "masks.png")
        assert picture.mode in ("I;16", "I")
        ids = np.array(picture)
        for oid, m in masks.items():
            assert (ids[m] == oid).all()
        assert sorted(np.unique(ids).tolist()) == [0, 1, 255, 256, 4000]
        np.testing.assert_array_equal(np.array(read_png(zf, "object_4000.png")) > 0, masks[4000])
    path = E.write_image_masks_zip({1: masks[1], 255: masks[255]}, tmp_path / "s.zip")
    with zipfile.ZipFile(path) as zf:
        assert read_png(zf, "masks.png").mode == "P"  # the palette PNG while ids fit 8 bits


# --------------------------------------------------------------------------------- SA-V JSON


def test_sav_json_round_trip_and_fields(tmp_path: Path):
    res = sample_results()
    path = E.write_sav_json(
        res, tmp_path / "v.json", height=H, width=W, fps=Fraction(30000, 1001),
        object_names={7: "dog"},
    )  # fmt: skip
    data = json.loads(path.read_text())
    assert data["video_id"] == "v" and data["video_frame_count"] == 6.0
    assert (data["video_height"], data["video_width"]) == (47.0, 65.0)
    assert data["video_resolution"] == 47.0 * 65.0
    assert data["video_duration"] == pytest.approx(6 * 1001 / 30000)
    assert data["masklet_id"] == [1, 3, 7] and data["masklet_num"] == 3
    assert data["masklet_first_appeared_frame"] == [0, 0, 1]  # row indices, as in SA-V
    assert data["masklet_frame_count"] == [3, 3, 3]
    assert data["masklet_visibility_changes"] == [0, 1, 0]
    assert data["masklet_size_abs"] == [170.0, 200.0, 50.0]
    assert data["masklet_size_rel"] == pytest.approx([170 / (H * W), 200 / (H * W), 50 / (H * W)])
    assert data["masklet_size_bucket"] == ["small", "small", "small"]
    assert data["sam2ui"] == {
        "format_version": 1,
        "frame_indices": [0, 2, 5],
        "object_names": {"7": "dog"},
        "fps": pytest.approx(30000 / 1001),
    }
    # Every cell is pycocotools' RLE of the same mask (the empty mask where absent).
    empty = np.zeros((H, W), dtype=bool)
    for r, f in enumerate([0, 2, 5]):
        for c, oid in enumerate([1, 3, 7]):
            m = res[f].get(oid, empty)
            assert data["masklet"][r][c] == coco_rle(m)
    back = E.read_sav_json(path)
    assert list(back) == [0, 2, 5]
    for f, objs in res.items():
        assert sorted(back[f]) == sorted(objs)
        for oid, m in objs.items():
            assert back[f][oid].dtype == bool
            np.testing.assert_array_equal(back[f][oid], m)
    # A streamed re-export of what was read gives the same file.
    E.write_sav_json(
        E.iter_sav_json(path), tmp_path / "v2.json", height=H, width=W,
        fps=30000 / 1001, frame_count=6, video_id="v", object_names={7: "dog"},
    )  # fmt: skip
    assert json.loads((tmp_path / "v2.json").read_text()) == data


def test_sav_json_sizes_buckets_and_empty_frames(tmp_path: Path):
    big = np.ones((100, 120), dtype=bool)
    res = {0: {}, 1: {2: big}, 3: {2: np.zeros((100, 120), dtype=bool)}, 4: {2: big}}
    data = json.loads(
        E.write_sav_json(res, tmp_path / "s.json", height=100, width=120, video_id="x").read_text()
    )
    assert data["video_id"] == "x" and "video_duration" not in data
    assert data["masklet_first_appeared_frame"] == [1]
    assert data["masklet_visibility_changes"] == [2]
    assert data["masklet_size_abs"] == [12000.0] and data["masklet_size_bucket"] == ["large"]
    back = E.read_sav_json(tmp_path / "s.json")
    assert back[0] == {} and back[3] == {} and back[4][2].all()


def test_masks_as_prompts(tmp_path: Path):
    res = sample_results()
    path = E.write_sav_json(res, tmp_path / "p.json", height=H, width=W)
    first = P.masks_as_prompts(path)
    assert {k: p.frame_idx for k, p in first.items()} == {1: 0, 3: 0, 7: 2}
    np.testing.assert_array_equal(first[7].mask, res[2][7])
    at5 = P.masks_as_prompts(json.loads(path.read_text()), frame_idx=5)
    assert sorted(at5) == [1, 7] and all(p.frame_idx == 5 for p in at5.values())
    np.testing.assert_array_equal(at5[1].mask, res[5][1])
    with pytest.raises(ValueError, match="frame 4 is not in the file"):
        P.masks_as_prompts(path, frame_idx=4)


def test_reads_sav_files_without_sam2ui_extras():
    """Meta's own files: ids from 0, rows as frame indices, floats for the video fields."""
    m0, m1 = box(0, 3, 0, 4, 6, 8), box(2, 6, 5, 8, 6, 8)
    empty = np.zeros((6, 8), dtype=bool)
    data = {"video_height": 6.0, "video_width": 8.0, "masklet_id": [0, 1],
            "masklet": [[coco_rle(m0), coco_rle(empty)], [coco_rle(m0), coco_rle(m1)]]}  # fmt: skip
    back = E.read_sav_json(data)
    assert sorted(back) == [0, 1] and sorted(back[0]) == [0] and sorted(back[1]) == [0, 1]
    np.testing.assert_array_equal(back[1][1], m1)
    assert P.masks_as_prompts(data)[1].frame_idx == 1
    with pytest.raises(ValueError, match="masklet"):
        E.read_sav_json({"video_id": "x"})


# --------------------------------------------------------------------------------- overlays


def test_overlay_of_more_objects_than_fit_8_bits_blends_each_in_its_colour():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    masks = {}
    for oid in range(1, 301):  # object k owns pixel k of the flattened picture
        m = np.zeros((20, 30), dtype=bool)
        m.flat[oid] = True
        masks[oid] = m
    masks[7] = masks[7] | masks[300]  # overlap: the smaller id is on top
    out = R.overlay_image(img, masks, alpha=0.5)
    flat, picture = out.reshape(-1, 3), img.reshape(-1, 3).astype(np.float64)
    for oid in (1, 7, 255, 256, 299):
        want = np.rint(picture[oid] * 0.5 + np.array(R.palette_color(oid)) * 0.5)
        np.testing.assert_array_equal(flat[oid], want)
    want = np.rint(picture[300] * 0.5 + np.array(R.palette_color(7)) * 0.5)
    np.testing.assert_array_equal(flat[300], want)
    np.testing.assert_array_equal(flat[0], img.reshape(-1, 3)[0])
    np.testing.assert_array_equal(flat[301:], img.reshape(-1, 3)[301:])


def test_overlay_image_and_cutout_exact():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    a, b = box(0, 20, 0, 30), box(10, 30, 20, 50)
    out = R.overlay_image(img, {5: b, 2: a}, alpha=0.25)
    f = img.astype(np.float64)
    c2, c5 = np.array(R.palette_color(2)), np.array(R.palette_color(5))
    only_b = b & ~a
    np.testing.assert_array_equal(out[only_b], np.rint(f[only_b] * 0.75 + c5 * 0.25))
    both = a & b  # the smallest id is on top: only its colour is blended there
    np.testing.assert_array_equal(out[both], np.rint(f[both] * 0.75 + c2 * 0.25))
    np.testing.assert_array_equal(out[~(a | b)], img[~(a | b)])
    red = R.overlay_image(img, {2: a}, colors={2: (255, 0, 0)}, alpha=1.0)
    assert (red[a] == [255, 0, 0]).all()
    edged = R.overlay_image(img, {2: a}, alpha=0.0, draw_contours=True)
    assert (edged[19, 10] == c2).all() and (edged[5, 10] == img[5, 10]).all()
    assert (edged[0, 10] == img[0, 10]).all()  # the image edge is not a contour
    rgba = E.cutout_png(img, a)
    assert rgba.shape == (H, W, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], img)
    np.testing.assert_array_equal(rgba[..., 3], a.astype(np.uint8) * 255)


@pytest.mark.parametrize("streamed", [False, True])
def test_overlay_mp4_decodes_back(tmp_path: Path, streamed: bool):
    av = pytest.importorskip("av")
    n = 6
    gray = np.full((H, W, 3), 100, dtype=np.uint8)
    obj = box(10, 40, 10, 50)
    res = {i: {1: obj} for i in range(0, n, 2)}  # odd frames untinted
    results = iter(sorted(res.items())) if streamed else res
    path = E.write_overlay_mp4(
        (gray.copy() for _ in range(n)), results, tmp_path / "o.mp4", fps=29.97, alpha=0.5
    )
    raw = path.read_bytes()
    boxes = top_level_boxes(raw)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (W + 1, H + 1)
        assert s.average_rate == Fraction(30000, 1001)
        frames = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
    assert len(frames) == n
    tint = np.array([100, 100, 100]) * 0.5 + np.array(R.palette_color(1)) * 0.5  # (114, 50, 50)
    for i, fr in enumerate(frames):
        inner = fr[20:30, 20:40].reshape(-1, 3).mean(0)
        want = tint if i % 2 == 0 else np.array([100.0, 100.0, 100.0])
        assert np.abs(inner - want).max() < 8, (i, inner)
        assert np.abs(fr[2, 2].astype(float) - 100).max() < 8
        assert np.abs(fr[H, W].astype(float) - 100).max() < 8  # padded edge replicates


@pytest.mark.parametrize(
    ("fps", "rate"),
    [
        (29.97, Fraction(30000, 1001)),
        (30000 / 1001, Fraction(30000, 1001)),
        (23.976, Fraction(24000, 1001)),
        (59.94, Fraction(60000, 1001)),
        (Fraction(2997, 100), Fraction(2997, 100)),  # explicit fractions are kept
        (30, Fraction(30)),
        (1.0, Fraction(1)),
        (12.5, Fraction(25, 2)),
    ],
)
def test_frame_rate_is_exact(fps: float, rate: Fraction):
    assert E._frame_rate(fps) == rate


# --------------------------------------------------------------------------------- bad inputs


def test_bad_inputs_give_clear_errors(tmp_path: Path):
    ok = box(0, 5, 0, 5)
    with pytest.raises(ValueError, match=r"frame 3, object 2 has shape \(5, 5\)"):
        E.write_sav_json({3: {2: np.zeros((5, 5), bool)}}, tmp_path / "a.json", height=H, width=W)
    for bad_id in (0, -1, True, "1"):
        with pytest.raises(ValueError, match="positive ints"):
            E.write_davis_png_zip({0: {bad_id: ok}}, tmp_path / "b.zip", height=H, width=W)
    with pytest.raises(ValueError, match="no frames"):
        E.write_davis_png_zip({}, tmp_path / "c.zip", height=H, width=W)
    with pytest.raises(ValueError, match="no frames"):
        E.write_sav_json(iter([]), tmp_path / "c.json", height=H, width=W)
    with pytest.raises(ValueError, match="frame 1 appears twice"):
        E.write_sav_json(iter([(1, {}), (1, {})]), tmp_path / "d.json", height=H, width=W)
    with pytest.raises(ValueError, match=">= 0"):
        E.write_sav_json({-1: {}}, tmp_path / "e.json", height=H, width=W)
    with pytest.raises(ValueError, match="palette"):
        E.write_davis_png_zip({0: {}}, tmp_path / "f.zip", height=H, width=W, palette="voc")
    with pytest.raises(ValueError, match="uint8"):
        R.overlay_image(np.zeros((H, W, 3), np.float32), {})
    with pytest.raises(ValueError, match="alpha"):
        R.overlay_image(np.zeros((H, W, 3), np.uint8), {}, alpha=2.0)
    frames = [np.zeros((H, W, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match="no frames"):
        E.write_overlay_mp4([], {}, tmp_path / "g.mp4", fps=24)
    with pytest.raises(ValueError, match="fps must be positive"):
        E.write_overlay_mp4(frames, {}, tmp_path / "g.mp4", fps=0)
    with pytest.raises(ValueError, match="increasing frame order"):
        E.write_overlay_mp4(frames, iter([(1, {}), (0, {})]), tmp_path / "h.mp4", fps=24)
    small = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="frame 1 is 10x10"):
        E.write_overlay_mp4([frames[0], small], {}, tmp_path / "i.mp4", fps=24)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
