"""What a model family gives rclib, and what rclib asks of it: one small interface per architecture.

A family turns a checkpoint's processed images into a :class:`VisualBatch` (the tokens the LLM would see,
before the projector, with the scores the methods read and where each token sits), and puts a compressed
batch back into the LLM's input. Everything else (the methods, the text score, generation, the figures)
reads those two and never learns which model it runs on, as transformers' ``vision_feature_select_strategy``
or grad-cam's ``reshape_transform`` keep an architecture's quirks behind one hook.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from rclib.result import CompressionResult, Slot


@dataclass
class VisualBatch:
    """One vision forward of a batch of B images, as N visual tokens per image (padded to the batch's largest N)."""

    features: torch.Tensor  # [B, N, C] feature-layer tokens: what the LLM would see, before the projector
    cls_attn: torch.Tensor  # [B, N] float32 RC's importance: last vision layer's [CLS] attention, heads as one
    keys: torch.Tensor  # [B, N, C] last vision layer's keys, the similarity the merging methods read
    final_tokens: torch.Tensor  # [B, N, C] last vision layer's outputs (before post-layernorm): the text score's input
    cls_attn_head_mean: torch.Tensor  # [B, N] the feature layer's [CLS] attention, mean over heads (the peers' own)
    keys_head_mean: torch.Tensor  # [B, N, C / heads] the feature layer's keys, mean over heads
    n_tokens: torch.Tensor  # [B] long: the real tokens of each image; tokens at n >= n_tokens[b] are padding
    places: torch.Tensor  # [B, N, 3] long: each token's (view, row, column) in the image's views (padding: -1)
    crops: torch.Tensor  # [B, N] long: the vision-tower crop each token comes from (0: the base view or the only
    # one), -1 where it mixes crops (a shrunk tiles' picture) and for padding
    views: list[list[tuple[int, int]]]  # per image, the (h, w) grid of each view: [base] or [base, tiles picture]
    n_llm_tokens: torch.Tensor  # [B] long: image tokens the uncompressed model feeds its LLM (row ends included)
    grid: tuple[int, int] | None  # (h, w) when every image is one h x w patch grid in raster order; else None

    @property
    def rows(self) -> torch.Tensor:
        """[B, N] long: the row of each token of a view whose rows end in a row-end token (views after the first,
        the tiles), -1 elsewhere."""
        return token_rows(self.places)


def token_rows(places: torch.Tensor) -> torch.Tensor:
    """[B, N] long from places [B, N, 3]: a token's row in a view after the first (whose rows the LLM ends with a
    row-end token), -1 for the first view and padding."""
    return torch.where(places[..., 0] >= 1, places[..., 1], -1)


def grid_places(view: int, h: int, w: int) -> torch.Tensor:
    """[h * w, 3] long: (view, row, column) of an h x w grid's tokens in raster order."""
    rows = torch.arange(h).repeat_interleave(w)
    return torch.stack([torch.full_like(rows, view), rows, torch.arange(w).repeat(h)], dim=1)


class Family(ABC):
    """A model family: how its checkpoints' images become visual tokens and how compressed tokens go back."""

    model_type: str  # config.json's model_type ("llava", "llava_next")
    model_class: str  # the transformers class that loads it
    title: str  # what users call it, for messages
    text_tower_kind: str | None = "clip"  # the contrastive model whose text tower scores its patches (TextTower.kind);
    # None: no text tower, the LLM scores the text (rclib.models.text_free)
    importance = "[CLS] attention"  # what fills the importance score methods read as cls_attn: the [CLS]'s attention
    # to each patch, or the substitute a family without a [CLS] declares

    @abstractmethod
    def check_config(self, config) -> None:
        """Raise a ValueError saying what differs when ``config`` is a variant rclib cannot read."""

    @abstractmethod
    def visual_batch(self, model, batch: dict) -> VisualBatch:
        """The processor's outputs ``batch`` (pixel values, sizes) through the vision tower, as visual tokens."""

    def project(self, model, tokens: torch.Tensor) -> torch.Tensor:
        """Vision-side tokens [B, K, C] -> LLM-side [B, K, H], as the checkpoint projects them."""
        return model.model.multi_modal_projector(tokens)

    def newline(self, model) -> torch.Tensor | None:
        """[H] the token the LLM reads at the end of each layout row, None where it reads none."""
        return None

    @abstractmethod
    def display_images(self, processor, pixel_values: torch.Tensor, views: list[list[tuple[int, int]]]
                       ) -> torch.Tensor:
        """float [B, 3, H, W] the pixels a figure draws the patch grid over, in the processor's normalised space.
        pixel_values: :meth:`batch_pixels`; views: each image's views (:attr:`VisualBatch.views`)."""

    @abstractmethod
    def most_image_tokens(self, config, image_processor) -> int:
        """The most image tokens one image can take in the LLM input (row ends included): what a prompt must leave
        room for."""

    def batch_pixels(self, batch: dict) -> torch.Tensor:
        """The processor's pixels with the images on the first axis (what ``Encoded.pixel_values`` holds)."""
        return batch["pixel_values"]

    def positions(self, model, batch: dict) -> torch.Tensor | None:
        """[3, B, L] the M-RoPE positions of the uncompressed prompts for LLMs that place tokens in 3-D; None for
        1-D positions (the LLM numbers its input places itself)."""
        return None

    def check_newlines(self, newlines: str) -> None:
        """Raise a ValueError for a row-end policy the family does not know (see :data:`NEWLINES`)."""
        if newlines not in NEWLINES:
            raise ValueError(f"newlines must be one of {NEWLINES}, got {newlines!r}")


NEWLINES = ("rows", "none")  # row-end tokens after compression: one after each layout row that still holds a token
# ("rows": all of them when nothing is pruned, as the model was trained), or none (the peers' released code)


def slot_rows(result: CompressionResult, rows: torch.Tensor) -> torch.Tensor:
    """[B, K] long: the layout row of each output slot: its anchor token's (the input token with the largest
    weight) for slots that stand at a token's place (kept, recovered, merge centres), -1 for slots that stand for
    no single place (RC's extra token, pooled cells) and for padding. rows: [B, N] the input tokens' rows."""
    if result.weights.shape[1] == 0:
        return torch.full_like(result.slot, -1)
    anchor = result.weights.argmax(dim=2)  # [B, K] the input token each slot stands at
    placed = (result.slot == Slot.KEPT) | (result.slot == Slot.RECOVERED) | (result.slot == Slot.CENTRE)
    return torch.where(placed & result.mask, rows.gather(1, anchor), -1)


def row_ends(rows: torch.Tensor) -> torch.Tensor:
    """[K] bool: the slots after which a row-end token follows: the last of each run of slots of one row (>= 0).
    rows: [K] long, the slots' layout rows in output order (-1: no row)."""
    following = torch.cat([rows[1:], rows.new_full((1,), -1)])
    return (rows >= 0) & (following != rows)


def with_row_ends(embeds: torch.Tensor, ends: torch.Tensor, newline: torch.Tensor | None) -> torch.Tensor:
    """[K + ends.sum(), H]: ``embeds`` [K, H] with ``newline`` [H] inserted after each slot marked in ``ends`` [K]."""
    if newline is None or not bool(ends.any()):
        return embeds
    pieces, start = [], 0
    for k in torch.nonzero(ends).flatten().tolist():
        pieces += [embeds[start:k + 1], newline[None].to(embeds)]
        start = k + 1
    return torch.cat([*pieces, embeds[start:]])


def slots_with_row_ends(ends: torch.Tensor) -> torch.Tensor:
    """[K + ends.sum()] long: the output slot at each place of :func:`with_row_ends`' sequence, -1 at row ends."""
    K = len(ends)
    shift = ends.long().cumsum(0) - ends.long()  # row ends before each slot
    slots = torch.full((K + int(ends.sum()),), -1, dtype=torch.long, device=ends.device)
    slots[torch.arange(K, device=ends.device) + shift] = torch.arange(K, device=ends.device)
    return slots


def image_span(ids: torch.Tensor, image_token_id: int) -> tuple[int, int]:
    """Start and end of the single run of image placeholders in a 1-D row of token ids."""
    positions = torch.nonzero(ids == image_token_id).flatten()
    if not len(positions) or int(positions[-1] - positions[0]) != len(positions) - 1:
        raise ValueError(f"expected one run of image tokens in the prompt, found {len(positions)} image tokens not in "
                         "one run; put exactly one image placeholder in each prompt")
    return int(positions[0]), int(positions[-1]) + 1


def placeholder_span(ids: torch.Tensor, image_token_id: int, n_tokens: int) -> tuple[int, int]:
    """The run of image placeholders in a 1-D row of token ids, checked to hold ``n_tokens`` of them."""
    start, end = image_span(ids, image_token_id)
    if end - start != n_tokens:
        raise ValueError(f"expected one run of {n_tokens} image tokens in the prompt, found {end - start}; put "
                         "exactly one image placeholder in each prompt")
    return start, end


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [L_b, H] -> zero-padded on the left [B, L, H] and the attention mask [B, L] (1 = real)."""
    length = max(len(row) for row in rows)
    embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=rows[0].device)
    for b, row in enumerate(rows):
        embeds[b, length - len(row):] = row
        mask[b, length - len(row):] = 1
    return embeds, mask


def pad_rows(rows: list[torch.Tensor], fill: float = 0) -> torch.Tensor:
    """Per-image tensors [N_b, ...] -> one [B, max N_b, ...], padded with ``fill``."""
    out = rows[0].new_full((len(rows), max(len(r) for r in rows), *rows[0].shape[1:]), fill)
    for b, row in enumerate(rows):
        out[b, :len(row)] = row
    return out
