"""sam2ui.hf's ``Sam2VideoModel`` against transformers' own, session for session.

Both get the same preprocessed frames (transformers' video processor needs torchvision) and
the same prompts through their own processors' prompt code; every output of every call is
compared: the low-resolution mask logits and the object scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import transformers

from sam2ui.hf import (
    Sam2VideoInferenceSession,
    Sam2VideoModel,
    Sam2VideoProcessor,
    Sam2VideoSegmentationOutput,
)
from tests.hf.checkpoints import SIZE

TOL = 1e-4
NUM_FRAMES, HEIGHT, WIDTH = 4, 90, 120


@pytest.fixture(scope="module")
def models(video_folder) -> tuple[Sam2VideoModel, Any]:
    return (
        Sam2VideoModel.from_pretrained(video_folder),
        transformers.Sam2VideoModel.from_pretrained(video_folder).eval(),
    )


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    """(T, 3, S, S) preprocessed frames: a smooth pattern drifting, with noise."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    video = torch.stack(
        [
            torch.stack([torch.sin(6 * xx + c + 0.3 * t) * torch.cos(5 * yy - c) for c in range(3)])
            for t in range(NUM_FRAMES)
        ]
    )
    return video + 0.2 * torch.randn(video.shape, generator=g)


class Pair:
    """Our session and transformers', driven by the same calls."""

    def __init__(self, models: tuple[Sam2VideoModel, Any], frames: torch.Tensor | None) -> None:
        self.ours, self.theirs = models
        size = (HEIGHT, WIDTH) if frames is not None else (None, None)
        # Every frame's features kept: each engine encodes each frame once.
        cache = {"max_vision_features_cache_size": NUM_FRAMES}
        self.s1 = Sam2VideoInferenceSession(frames, *size, **cache)
        self.s2 = transformers.Sam2VideoInferenceSession(
            frames, *size, dtype=torch.float32, **cache
        )
        self.p1 = Sam2VideoProcessor(target_size=SIZE)
        self.p2 = object.__new__(transformers.Sam2VideoProcessor)  # its prompt half only
        self.p2.point_pad_value, self.p2.target_size = -10, SIZE
        self.diffs: dict[str, float] = {"pred_masks": 0.0, "object_score_logits": 0.0}

    def add(self, **kwargs: Any) -> None:
        self.p1.add_inputs_to_inference_session(self.s1, **kwargs)
        self.p2.add_inputs_to_inference_session(self.s2, **kwargs)

    def compare(self, a: Sam2VideoSegmentationOutput, b: Any) -> None:
        assert isinstance(a, Sam2VideoSegmentationOutput)
        assert a.frame_idx == b.frame_idx and a.object_ids == b.object_ids
        for name in ("pred_masks", "object_score_logits"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.shape == y.shape, (name, x.shape, y.shape)
            diff = (x - y).abs().max().item()
            self.diffs[name] = max(self.diffs[name], diff)
            assert diff <= TOL, (name, a.frame_idx, diff)

    def run(self, **kwargs: Any) -> Sam2VideoSegmentationOutput:
        a = self.ours(inference_session=self.s1, **kwargs)
        b = self.theirs(inference_session=self.s2, **kwargs)
        self.compare(a, b)
        return a

    def propagate(self, **kwargs: Any) -> list[Sam2VideoSegmentationOutput]:
        ours = list(self.ours.propagate_in_video_iterator(self.s1, **kwargs))
        theirs = list(self.theirs.propagate_in_video_iterator(self.s2, **kwargs))
        assert [o.frame_idx for o in ours] == [t.frame_idx for t in theirs]
        for a, b in zip(ours, theirs):
            self.compare(a, b)
        return ours


def test_two_objects_in_one_call_refinement_and_repropagation(models, frames) -> None:
    pair = Pair(models, frames)
    # Object 2 has three points, object 3 one: padded to three with -10.
    pair.add(frame_idx=0, obj_ids=[2, 3],
             input_points=[[[[20, 30], [23, 25], [27, 17]], [[40, 15]]]],
             input_labels=[[[1, 1, 0], [1]]])  # fmt: skip
    first = pair.run(frame_idx=0)
    assert first.pred_masks.shape == (2, 1, SIZE // 4, SIZE // 4)
    assert first.object_score_logits.shape == (2, 1)
    assert pair.s1.obj_ids == [2, 3]
    tracked = pair.propagate()
    assert [o.frame_idx for o in tracked] == list(range(NUM_FRAMES))
    assert all(o.pred_masks.std() > 1e-2 for o in tracked)
    # A refinement click on a tracked frame, run, then propagation again from the start.
    pair.add(frame_idx=2, obj_ids=2, input_points=[[[[22, 28]]]], input_labels=[[[1]]])
    refined = pair.run(frame_idx=2)
    assert not torch.equal(refined.pred_masks[0], tracked[2].pred_masks[0])
    pair.propagate()
    # Backwards from the last frame, two frames.
    backwards = pair.propagate(start_frame_idx=3, max_frame_num_to_track=2, reverse=True)
    assert [o.frame_idx for o in backwards] == [3, 2, 1]
    print("max |diff| over the session:", pair.diffs)  # shown by pytest -s
    assert max(pair.diffs.values()) <= TOL


def test_masks_boxes_and_prompts_on_a_later_frame(models, frames) -> None:
    pair = Pair(models, frames)
    mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    mask[20:50, 30:80] = True
    pair.add(frame_idx=1, obj_ids=5, input_masks=mask)
    pair.run(frame_idx=1)
    pair.add(frame_idx=1, obj_ids=6, input_boxes=[[[10, 10, 60, 70]]])
    out = pair.run(frame_idx=1)
    assert out.object_ids == [5, 6]
    pair.propagate()  # from frame 1 forwards
    pair.propagate(reverse=True)  # and back to frame 0


def test_streaming_frame_by_frame(models, frames) -> None:
    pair = Pair(models, None)
    for t in range(3):
        if t == 0:
            pair.add(frame_idx=0, obj_ids=1, input_points=[[[[21, 35], [25, 22]]]],
                     input_labels=[[[1, 1]]], original_size=(HEIGHT, WIDTH))  # fmt: skip
        out = pair.run(frame=frames[t])
        assert out.frame_idx == t
    assert pair.s1.num_frames == 3
    assert (pair.s1.video_height, pair.s1.video_width) == (HEIGHT, WIDTH)


def test_session_errors_and_resets(models, frames) -> None:
    model = models[0]
    processor = Sam2VideoProcessor(target_size=SIZE)
    session = Sam2VideoInferenceSession(frames, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="no object to track yet"):
        model(inference_session=session, frame_idx=0)
    with pytest.raises(ValueError, match="no frame has been segmented from prompts yet"):
        next(model.propagate_in_video_iterator(session))
    calls: list[Callable[[], Any]] = [
        lambda: processor.add_inputs_to_inference_session(
            session, 0, [1, 2], input_points=[[[[1, 2]]]], input_labels=[[[1]]]
        ),
        lambda: processor.add_inputs_to_inference_session(session, 0, 1, input_points=[[[[1, 2]]]]),
        lambda: processor.add_inputs_to_inference_session(
            session, 0, 1, input_points=[[[1, 2]]], input_labels=[[[1]]]
        ),
    ]
    messages = [
        "2 object id.s. but 1 object.s. of points at the object level",
        "input_points and input_labels must be given together",
        "input_points must be nested 4 levels deep",
    ]
    for call, message in zip(calls, messages):
        with pytest.raises(ValueError, match=message):
            call()
    processor.add_inputs_to_inference_session(
        session, 0, 7, input_points=[[[[10, 20]]]], input_labels=[[[1]]]
    )
    model(inference_session=session, frame_idx=0)
    assert session.obj_ids == [7] and session.features
    session.reset_inference_session()
    assert session.obj_ids == [] and not session.features and session.num_frames == NUM_FRAMES


def test_processor_makes_sessions_from_frames(video_folder) -> None:
    """init_video_session preprocesses a list of frames (the seeds' bfloat16 session)."""
    import numpy as np

    processor = Sam2VideoProcessor.from_pretrained(video_folder)
    rng = np.random.default_rng(0)
    video = [rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(2)]
    session = processor.init_video_session(video=video, torch_dtype=torch.bfloat16)
    assert session.num_frames == 2 and (session.video_height, session.video_width) == (90, 120)
    assert session.get_frame(0).shape == (3, SIZE, SIZE)
    assert session.get_frame(0).dtype == torch.bfloat16
    streamed = processor(images=video[0], return_tensors="pt")
    assert torch.equal(streamed.pixel_values[0].bfloat16(), session.get_frame(0))
