"""One tracking step of SAM 2: condition a frame on memory, decode its mask, encode its memory.

These functions hold the model arithmetic of video tracking; which frames are kept and how
objects and prompts are organised is the video predictor's business. Everything is batch-first:
B objects on one frame, image features (B, C, h, w), memory tokens (B, tokens, mem_dim).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .layers import resize_bilinear
from .position_encoding import sine_1d
from .sam2 import SAM2Model

# Logit given to every pixel of an object judged absent (the reference's NO_OBJ_SCORE).
NO_OBJECT_LOGIT = -1024.0


@dataclass(frozen=True)
class FrameMemory:
    """What later frames read of a tracked frame.

    ``features``: (B, mem_dim, h, w) memory features; ``pos_enc``: (B, mem_dim, h, w) their
    position encoding; ``obj_ptr``: (B, C) object pointers.
    """

    features: torch.Tensor
    pos_enc: torch.Tensor
    obj_ptr: torch.Tensor


@dataclass(frozen=True)
class HeadsOutput:
    """Decoder outputs for B objects on one frame.

    ``low_res_masks`` (B, 1, S/4, S/4) and ``high_res_masks`` (B, 1, S, S): the chosen mask's
    logits; ``multi_low_res_masks`` (B, M, S/4, S/4) all of them; ``ious`` (B, M);
    ``obj_ptr`` (B, C); ``object_score_logits`` (B, 1).
    """

    multi_low_res_masks: torch.Tensor
    ious: torch.Tensor
    low_res_masks: torch.Tensor
    high_res_masks: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor


@dataclass(frozen=True)
class PointPrompt:
    """Clicks for B objects: coords (B, N, 2) in the model's S x S input frame, labels (B, N)."""

    coords: torch.Tensor
    labels: torch.Tensor


def _gate_obj_ptr(model: SAM2Model, obj_ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Blend the pointer with the learned "no object" pointer by presence (B, 1) in [0, 1]."""
    cfg = model.config
    if not cfg.pred_obj_scores:
        return obj_ptr
    if cfg.fixed_no_obj_ptr:
        obj_ptr = present * obj_ptr
    return obj_ptr + (1 - present) * model.no_obj_ptr


def sam_heads(
    model: SAM2Model,
    features: torch.Tensor,
    high_res_features: list[torch.Tensor],
    points: PointPrompt | None = None,
    mask_inputs: torch.Tensor | None = None,
    multimask_output: bool = False,
) -> HeadsOutput:
    """Decode masks on memory-conditioned ``features`` (B, C, h, w) for B objects.

    Without points, a single padding point is used; ``mask_inputs`` (B, 1, H, W) logits are
    resized to the prompt encoder's mask size when needed.
    """
    b = features.shape[0]
    cfg = model.config
    if points is None:
        coords = features.new_zeros(b, 1, 2)
        labels = torch.full((b, 1), -1, dtype=torch.int32, device=features.device)
    else:
        coords, labels = points.coords, points.labels
    encoder = model.sam_prompt_encoder
    if mask_inputs is not None and tuple(mask_inputs.shape[-2:]) != encoder.mask_input_size:
        mask_inputs = F.interpolate(
            mask_inputs.float(),
            size=encoder.mask_input_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    sparse, dense = encoder((coords, labels), mask_inputs)
    out = model.sam_mask_decoder(
        features,
        encoder.get_dense_pe(),
        sparse,
        dense,
        multimask_output=multimask_output,
        high_res_features=high_res_features,
    )
    multi = out.masks
    present = out.object_score_logits > 0
    if cfg.pred_obj_scores:
        multi = torch.where(present[:, :, None, None], multi, NO_OBJECT_LOGIT)
    multi = multi.float()
    multi_high = resize_bilinear(multi, (cfg.image_size, cfg.image_size))
    token = out.sam_tokens[:, 0]
    if multimask_output:
        best = out.iou_pred.argmax(dim=-1)
        rows = torch.arange(b, device=features.device)
        low, high = multi[rows, best].unsqueeze(1), multi_high[rows, best].unsqueeze(1)
        if out.sam_tokens.shape[1] > 1:
            token = out.sam_tokens[rows, best]
    else:
        low, high = multi, multi_high
    obj_ptr = _gate_obj_ptr(model, model.obj_ptr_proj(token), present.float())
    return HeadsOutput(multi, out.iou_pred, low, high, obj_ptr, out.object_score_logits)


def mask_as_output(
    model: SAM2Model,
    features: torch.Tensor,
    high_res_features: list[torch.Tensor],
    mask: torch.Tensor,
) -> HeadsOutput:
    """Use a given mask (B, 1, S, S), 0/1, as the frame's output instead of decoding one; the
    object pointer still comes from the decoder, prompted with the downsampled mask."""
    scale, bias = 20.0, -10.0  # logits of +-10 around the mask's edge
    mask = mask.float()
    high = mask * scale + bias
    low = F.interpolate(
        high,
        size=(high.shape[-2] // 4, high.shape[-1] // 4),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    ious = mask.new_ones(mask.shape[0], 1)
    if model.config.use_obj_ptrs_in_encoder:
        decoded = sam_heads(
            model, features, high_res_features, mask_inputs=model.mask_downsample(mask)
        )
        obj_ptr = decoded.obj_ptr
    else:
        obj_ptr = mask.new_zeros(mask.shape[0], model.config.d_model)
    present = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
    obj_ptr = _gate_obj_ptr(model, obj_ptr, present)
    return HeadsOutput(low, ious, low, high, obj_ptr, scale * present + bias)


def _memory_frames(
    model: SAM2Model,
    frame_idx: int,
    cond: Mapping[int, FrameMemory],
    non_cond: Mapping[int, FrameMemory],
    reverse: bool,
) -> list[tuple[int, FrameMemory]]:
    """(temporal slot, memory) pairs read for ``frame_idx``: slot 0 for every conditioning
    frame, slots 1..num_maskmem-1 for the previous frames in the direction of travel."""
    cfg = model.config
    stride = cfg.memory_temporal_stride_for_eval
    chosen = [(0, mem) for mem in cond.values()]
    for slot in range(1, cfg.num_maskmem):
        back = cfg.num_maskmem - slot  # frames before the current one
        if back == 1:
            prev = frame_idx + 1 if reverse else frame_idx - 1
        elif reverse:
            prev = -(-(frame_idx + 2) // stride) * stride + (back - 2) * stride
        else:
            prev = ((frame_idx - 2) // stride) * stride - (back - 2) * stride
        mem = non_cond.get(prev)
        if mem is not None:
            chosen.append((slot, mem))
    return chosen


def _object_pointers(
    model: SAM2Model,
    frame_idx: int,
    cond: Mapping[int, FrameMemory],
    non_cond: Mapping[int, FrameMemory],
    num_frames: int,
    reverse: bool,
) -> list[tuple[int, torch.Tensor]]:
    """(signed temporal distance, pointer (B, C)) pairs read for ``frame_idx``."""
    cfg = model.config
    limit = min(num_frames, cfg.max_obj_ptrs_in_encoder)
    sign = -1 if reverse else 1
    out: list[tuple[int, torch.Tensor]] = []
    for t, mem in cond.items():
        if cfg.only_obj_ptrs_in_the_past_for_eval and (t < frame_idx if reverse else t > frame_idx):
            continue
        dist = (frame_idx - t) * sign if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t)
        out.append((dist, mem.obj_ptr))
    for dist in range(1, limit):
        t = frame_idx + dist if reverse else frame_idx - dist
        if t < 0 or t >= num_frames:
            break
        past = non_cond.get(t)
        if past is not None:
            out.append((dist, past.obj_ptr))
    return out


def condition_on_memory(
    model: SAM2Model,
    frame_idx: int,
    is_init_cond_frame: bool,
    vision_feat: torch.Tensor,
    vision_pos: torch.Tensor,
    cond: Mapping[int, FrameMemory],
    non_cond: Mapping[int, FrameMemory],
    num_frames: int,
    reverse: bool = False,
) -> torch.Tensor:
    """The frame's features (B, C, h, w) after memory attention to earlier frames.

    ``cond`` holds the conditioning frames to attend to (all of them unless the model limits
    it) and ``non_cond`` the other tracked frames, by frame index; only the frames the model
    reads are touched. The first conditioning frame gets the "no memory" embedding instead.
    """
    cfg = model.config
    b, c, h, w = vision_feat.shape
    if is_init_cond_frame:
        if not cfg.directly_add_no_mem_embed:
            raise NotImplementedError("only directly_add_no_mem_embed models are supported")
        return vision_feat + model.no_mem_embed.view(1, -1, 1, 1)
    if not cond:
        raise RuntimeError(f"frame {frame_idx} has no conditioning frame to track from")
    mem_dim = cfg.mem_dim
    memory, memory_pos = [], []
    for slot, mem in _memory_frames(model, frame_idx, cond, non_cond, reverse):
        memory.append(mem.features.flatten(2).transpose(1, 2).to(vision_feat.device))
        tpos = model.maskmem_tpos_enc[cfg.num_maskmem - slot - 1].view(1, 1, mem_dim)
        memory_pos.append(mem.pos_enc.flatten(2).transpose(1, 2).to(vision_feat.device) + tpos)
    num_ptr_tokens = 0
    if cfg.use_obj_ptrs_in_encoder:
        pointers = _object_pointers(model, frame_idx, cond, non_cond, num_frames, reverse)
        if pointers:
            dists = torch.tensor([d for d, _ in pointers], device=vision_feat.device)
            ptrs = torch.stack([p for _, p in pointers], dim=1)  # (B, P, C)
            if cfg.add_tpos_enc_to_obj_ptrs:
                t_max = min(num_frames, cfg.max_obj_ptrs_in_encoder) - 1
                tpos_dim = c if cfg.proj_tpos_enc_in_obj_ptrs else mem_dim
                ptr_pos = model.obj_ptr_tpos_proj(sine_1d(dists / t_max, tpos_dim))  # (P, mem)
                ptr_pos = ptr_pos.unsqueeze(0).expand(b, -1, -1)
            else:
                ptr_pos = ptrs.new_zeros(b, len(pointers), mem_dim)
            if mem_dim < c:
                # Each C-wide pointer becomes C / mem_dim consecutive mem_dim-wide tokens.
                split = c // mem_dim
                ptrs = ptrs.reshape(b, -1, mem_dim)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=1)
            memory.append(ptrs)
            memory_pos.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[1]
    dtype = model.compute_dtype
    curr = vision_feat.flatten(2).transpose(1, 2)  # (B, hw, C)
    curr_pos = vision_pos.flatten(2).transpose(1, 2)
    out = model.memory_attention(
        curr.to(dtype),
        curr_pos.to(dtype),
        torch.cat(memory, dim=1).to(dtype),
        torch.cat(memory_pos, dim=1).to(dtype),
        num_obj_ptr_tokens=num_ptr_tokens,
    )
    return out.float().transpose(1, 2).reshape(b, c, h, w)


def encode_memory(
    model: SAM2Model,
    vision_feat: torch.Tensor,
    high_res_masks: torch.Tensor,
    object_score_logits: torch.Tensor,
    is_mask_from_pts: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory (features, pos_enc), each (B, mem_dim, h, w), of a frame's raw backbone features
    (B, C, h, w) and its chosen mask logits (B, 1, S, S)."""
    cfg = model.config
    masks = high_res_masks
    if cfg.non_overlap_masks_for_mem_enc:
        masks = non_overlapping(masks)
    if cfg.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts:
        masks = (masks > 0).float()
    else:
        masks = torch.sigmoid(masks)
    masks = masks * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
    dtype = model.compute_dtype
    out = model.memory_encoder(vision_feat.to(dtype), masks.to(dtype), skip_mask_sigmoid=True)
    features = out.features.float()
    if cfg.no_obj_embed_spatial:
        absent = (object_score_logits <= 0).float()[..., None, None]  # (B, 1, 1, 1)
        features = features + absent * model.no_obj_embed_spatial[..., None, None]
    return features, out.pos_enc.float()


def non_overlapping(masks: torch.Tensor) -> torch.Tensor:
    """Keep each pixel only in the object (batch entry) with the highest logit; elsewhere
    clamp the logits to at most -10. masks: (B, 1, H, W)."""
    if masks.shape[0] == 1:
        return masks
    winner = masks.argmax(dim=0, keepdim=True)
    ids = torch.arange(masks.shape[0], device=masks.device)[:, None, None, None]
    return torch.where(winner == ids, masks, masks.clamp(max=-10.0))


def use_multimask(model: SAM2Model, is_init_cond_frame: bool, points: PointPrompt | None) -> bool:
    """Whether the decoder gives three candidates: on a frame with a single click."""
    cfg = model.config
    num_pts = 0 if points is None else points.labels.shape[1]
    return (
        cfg.multimask_output_in_sam
        and (is_init_cond_frame or cfg.multimask_output_for_tracking)
        and cfg.multimask_min_pt_num <= num_pts <= cfg.multimask_max_pt_num
    )


@dataclass(frozen=True)
class StepOutput:
    """One object batch on one frame: the decoder's outputs and, when encoded, its memory."""

    heads: HeadsOutput
    memory: FrameMemory | None


def track_step(
    model: SAM2Model,
    frame_idx: int,
    is_init_cond_frame: bool,
    vision_feats: list[torch.Tensor],
    vision_pos: torch.Tensor,
    cond: Mapping[int, FrameMemory],
    non_cond: Mapping[int, FrameMemory],
    num_frames: int,
    *,
    points: PointPrompt | None = None,
    mask_inputs: torch.Tensor | None = None,
    reverse: bool = False,
    run_memory_encoder: bool = True,
    prev_mask_logits: torch.Tensor | None = None,
) -> StepOutput:
    """Segment B objects on one frame and encode the result into memory.

    ``vision_feats``: the frame's decoder-ready backbone levels, finest first, batch B (the
    last one is the (B, C, h, w) image embedding, without the no-memory embedding);
    ``vision_pos``: its (B, C, h, w) position encoding. A mask prompt (B, 1, S, S) is used as
    the output directly; otherwise the features are conditioned on memory and decoded with
    ``points`` and, for corrections, the previous mask logits ``prev_mask_logits``.
    """
    high_res, embed = vision_feats[:-1], vision_feats[-1]
    if mask_inputs is not None and model.config.use_mask_input_as_output_without_sam:
        heads = mask_as_output(model, embed, high_res, mask_inputs)
    else:
        features = condition_on_memory(
            model, frame_idx, is_init_cond_frame, embed, vision_pos, cond, non_cond,
            num_frames, reverse,
        )  # fmt: skip
        if prev_mask_logits is not None:
            mask_inputs = prev_mask_logits
        heads = sam_heads(
            model, features, high_res, points, mask_inputs,
            use_multimask(model, is_init_cond_frame, points),
        )  # fmt: skip
    memory = None
    if run_memory_encoder and model.config.num_maskmem > 0:
        feats, pos = encode_memory(
            model, embed, heads.high_res_masks, heads.object_score_logits, points is not None
        )
        memory = FrameMemory(feats, pos, heads.obj_ptr)
    return StepOutput(heads, memory)
