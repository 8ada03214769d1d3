"""Qwen2.5-VL (transformers' Qwen2_5_VLForConditionalGeneration): dynamic resolution, no [CLS], no text tower, M-RoPE.

The processor resizes an image to multiples of 28 px within its pixel range and cuts it into 14 px
patches; the ViT (window attention in most blocks, full attention in a few) ends in a merger that turns
each 2 x 2 group of patches into one LLM-space token: N = (h / 2) * (w / 2) tokens, one grid per image,
a count that follows the image's size. The LLM places them with M-RoPE: each image token carries a
(time, row, column) position, the text after the image continues from the largest.

What rclib reads:
- tokens: the merger's outputs, the tokens the LLM reads (in its input space: selection and merging happen
  there, as nothing vision-side maps one-to-one onto them);
- importance: the attention each patch receives in the last full-attention block (mean over its queries,
  which are the image's patches, and over the heads), summed over each 2 x 2 merge group (the share of
  attention the merged token's patches receive); keys: that block's keys (before its rotary embedding),
  averaged over the group. Qwen's ViT has no [CLS];
- text score: none native (Qwen's ViT was trained without a text tower): a training-free substitute from
  the LLM itself, chosen by the ``text_score`` switch (see :mod:`rclib.models.text_free`);
- positions: every output token keeps the M-RoPE position of the token it stands at (its anchor: a kept
  token's own, a merged token's centre's, RC's extra token its largest contributor's), text keeps its own,
  so the LLM sees the surviving tokens where they were and decoding continues where the full input would.
"""
from __future__ import annotations

import torch

from rclib.models.families.base import Family, VisualBatch, grid_places, pad_rows


def merge_groups(values: torch.Tensor, unit: int) -> torch.Tensor:
    """[L, ...] patch values in merge-group order -> [L / unit, unit, ...] each group of ``unit`` patches."""
    return values.reshape(values.shape[0] // unit, unit, *values.shape[1:])


def received_by_chunk(queries: torch.Tensor, keys: torch.Tensor, bounds: list[int]) -> torch.Tensor:
    """[L] float32: the attention each token receives from the tokens of its own chunk (an image), per head
    softmax(q k^T / sqrt(d)) averaged over the chunk's queries, then over the heads.

    queries, keys [L, heads, d] (rotary applied, as the block attends); bounds: the chunks' cumulative lengths.
    """
    received = torch.zeros(keys.shape[0], device=keys.device)
    scale = keys.shape[-1] ** -0.5
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        for h in range(keys.shape[1]):
            logits = queries[start:end, h].float() @ keys[start:end, h].float().T * scale  # [n, n]
            received[start:end] += logits.softmax(-1).mean(0)
    return received / keys.shape[1]


class Qwen2_5_VL(Family):
    """Qwen2.5-VL: one merged grid per image, importance from received attention, M-RoPE positions kept."""

    model_type = "qwen2_5_vl"
    model_class = "Qwen2_5_VLForConditionalGeneration"
    title = "Qwen2.5-VL"
    importance = "received attention (mean over queries), last full-attention ViT block, summed per merge group"
    text_tower_kind = None  # no text tower: the text score comes from the LLM (rclib.models.text_free)

    def check_config(self, config) -> None:
        if not config.vision_config.fullatt_block_indexes:
            raise ValueError("rclib reads Qwen2.5-VL's importance from a full-attention ViT block; this checkpoint "
                             "declares none (vision_config.fullatt_block_indexes)")

    def visual_batch(self, model, batch: dict) -> VisualBatch:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
        from transformers.vision_utils import get_vision_window_index

        visual, vc = model.model.visual, model.config.vision_config
        grid_thw = batch["image_grid_thw"]
        block = visual.blocks[vc.fullatt_block_indexes[-1]].attn
        caught = {}
        hook = block.register_forward_pre_hook(
            lambda module, args, kwargs: caught.update(kwargs, hidden=args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True)
        try:
            merged = visual(batch["pixel_values"].to(model.device, visual.dtype), grid_thw=grid_thw).pooler_output
        finally:
            hook.remove()
        hidden = caught["hidden"]  # [L, C] the block's attention input, patches in window order
        L = hidden.shape[0]
        q, k, _ = block.qkv(hidden).reshape(L, 3, block.num_heads, -1).unbind(1)  # [L, heads, d] each
        q_rotated, k_rotated = apply_rotary_pos_emb_vision(q, k, *caught["position_embeddings"])
        received = received_by_chunk(q_rotated, k_rotated, caught["cu_seqlens"].tolist())  # [L]
        unit = vc.spatial_merge_size ** 2
        window_index, _ = get_vision_window_index(grid_thw, vc.spatial_merge_size, vc.window_size, vc.patch_size)
        raster = torch.argsort(window_index.to(hidden.device))  # merge group in raster order -> window position
        importance = merge_groups(received, unit).sum(1)[raster]  # [N total] what each group receives, raster order
        keys = merge_groups(k.reshape(L, -1), unit).mean(1)[raster]  # [N total, C] the group's mean key
        grids = [(int(h) // vc.spatial_merge_size, int(w) // vc.spatial_merge_size) for _, h, w in grid_thw.tolist()]
        counts = [h * w for h, w in grids]
        split = lambda values: pad_rows(list(torch.split(values, counts)))  # noqa: E731 [N total, ...] -> [B, N, ...]
        features, importance, keys = split(merged), split(importance), split(keys)
        places = pad_rows([grid_places(0, h, w) for h, w in grids], -1)
        n_tokens = torch.tensor(counts)
        return VisualBatch(features=features, cls_attn=importance, keys=keys, final_tokens=None,
                           cls_attn_head_mean=importance, keys_head_mean=keys, n_tokens=n_tokens, places=places,
                           crops=torch.where(places[..., 0] >= 0, 0, -1),
                           views=[[grid] for grid in grids], n_llm_tokens=n_tokens,
                           grid=grids[0] if len(set(grids)) == 1 else None)

    def most_image_tokens(self, config, image_processor) -> int:
        """The processor's largest image (its longest_edge, in pixels) in merged 2 x 2 groups of patches."""
        group = image_processor.patch_size * image_processor.merge_size
        return image_processor.size["longest_edge"] // (group * group)

    def project(self, model, tokens: torch.Tensor) -> torch.Tensor:
        return tokens  # the merger's outputs are already in the LLM's input space

    def batch_pixels(self, batch: dict) -> torch.Tensor:
        """[B, max patches, D] each image's flattened patches (the processor concatenates them), zero-padded."""
        counts = batch["image_grid_thw"].prod(-1).tolist()
        return pad_rows(list(torch.split(batch["pixel_values"], counts)))

    def positions(self, model, batch: dict) -> torch.Tensor:
        """[3, B, L] the M-RoPE positions of the uncompressed prompt (zero at padding)."""
        types = batch.get("mm_token_type_ids")  # 1 on image tokens, 0 on text; older processors give none
        if types is None:
            types = (batch["input_ids"] == model.config.image_token_id).int()
        positions, _ = model.model.get_rope_index(batch["input_ids"], types,
                                                  image_grid_thw=batch["image_grid_thw"],
                                                  attention_mask=batch["attention_mask"])
        return positions

    def display_images(self, processor, pixel_values: torch.Tensor, grids: list[list[tuple[int, int]]]
                       ) -> torch.Tensor:
        """[B, 3, H, W] each image rebuilt from its flattened patches (its first temporal copy), zero-padded."""
        m, p = processor.merge_size, processor.patch_size
        temporal = processor.temporal_patch_size
        images = []
        for pixels, [(gh, gw)] in zip(pixel_values, grids, strict=True):
            n = gh * gw * m * m
            patches = pixels[:n].view(gh, gw, m, m, 3, temporal, p, p)[:, :, :, :, :, 0]  # [gh, gw, m, m, 3, p, p]
            images.append(patches.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, gh * m * p, gw * m * p))
        height, width = max(i.shape[1] for i in images), max(i.shape[2] for i in images)
        out = images[0].new_zeros(len(images), 3, height, width)
        for b, image in enumerate(images):
            out[b, :, :image.shape[1], :image.shape[2]] = image
        return out
