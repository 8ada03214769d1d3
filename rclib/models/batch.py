"""What a batch is between the stages: the encoders' outputs (:class:`Encoded`), the LLM's input (:class:`LLMInput`)
and a finished run (:class:`Run`), with the helpers that split a batch into groups and put it back together."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from rclib.models.families.base import token_rows
from rclib.result import CompressionResult


@dataclass
class Encoded:
    """A batch after the encoders, in the model's device: what compression and generation read.

    Images of one batch may give different numbers of tokens (LLaVA-NeXT's tiles): the per-token tensors are
    padded to the largest N, ``token_counts`` says how many are real, and compression runs on each group of
    equal counts (:meth:`groups`), so a batch answers exactly as its samples one by one.
    """

    features: torch.Tensor  # [B, N, C] feature-layer patch tokens, the ones the LLM would see
    cls_attn: torch.Tensor  # [B, N] last vision layer's [CLS] -> patch attention
    text_sim: torch.Tensor  # [B, N] cosine between the text embedding and each projected final patch token
    keys: torch.Tensor  # [B, N, C] last vision layer's k_proj outputs for the patches
    grid: tuple[int, int] | None  # (h, w) patch grid, N = h * w in raster order; None: tiles (see token_rows)
    questions: list[str]  # the questions as asked
    prompts: list[str]  # the LLM prompts, one image placeholder each
    text_inputs: list[str]  # what the CLIP text tower embedded (the questions, or the released code's prompt line)
    input_ids: torch.Tensor  # [B, L] the processor's tokens, left-padded, one run of image placeholders per row
    attention_mask: torch.Tensor  # [B, L] 1 for real tokens
    pixel_values: torch.Tensor  # the processor's images: [B, 3, H, W], or [B, crops, 3, H, W] for tiled families
    cls_attn_head_mean: torch.Tensor | None = None  # [B, N] the feature layer's [CLS] attention, mean over heads
    keys_head_mean: torch.Tensor | None = None  # [B, N, C / heads] the feature layer's keys, mean over heads
    token_counts: torch.Tensor | None = None  # [B] long: real tokens per image (None: all N)
    token_places: torch.Tensor | None = None  # [B, N, 3] long: each token's (view, row, column); padding -1
    views: list[list[tuple[int, int]]] | None = None  # per image, each view's (h, w) grid: the base view, the tiles
    n_llm_tokens: torch.Tensor | None = None  # [B] long: image tokens the uncompressed model feeds its LLM
    llm_positions: torch.Tensor | None = None  # [B, 3, L] M-RoPE positions of the uncompressed prompt (None: 1-D)
    token_crops: torch.Tensor | None = None  # [B, N] long: the vision-tower crop of each token (-1: several, padding)

    def __len__(self) -> int:
        return self.features.shape[0]

    def with_feature_layer_scores(self) -> Encoded:
        """The same batch with the scores FasterVLM and VisionZip define in place of RC's: [CLS] attention and
        keys of the feature layer (LLaVA's penultimate), per head, averaged over heads. Run a peer on it to
        run it as its paper does; the default ``cls_attn`` / ``keys`` are RC's (last layer, one wide head),
        shared by all methods for ablations."""
        if self.cls_attn_head_mean is None or self.keys_head_mean is None:
            raise ValueError("this Encoded has no feature-layer scores; make it with CompressedModel.encode")
        return replace(self, cls_attn=self.cls_attn_head_mean, keys=self.keys_head_mean)

    @property
    def n_tokens(self) -> int:
        return self.features.shape[1]

    @property
    def token_rows(self) -> torch.Tensor:
        """[B, N] long: each token's row in a view whose rows end in a row-end token (the tiles), else -1."""
        return token_rows(self.token_places)

    def groups(self) -> list[list[int]]:
        """The samples in groups of equal token counts, in order of first appearance: one group when all are equal."""
        if self.token_counts is None:
            return [list(range(len(self)))]
        by_count: dict[int, list[int]] = {}
        for b, count in enumerate(self.token_counts.tolist()):
            by_count.setdefault(count, []).append(b)
        return list(by_count.values())

    def per_token(self, value) -> bool:
        """True for a field with a value per token: a tensor [B, N, ...]."""
        return isinstance(value, torch.Tensor) and value.dim() > 1 and value.shape[1] == self.n_tokens

    def tokens_at(self, index: torch.Tensor) -> Encoded:
        """This one-image batch with only its tokens ``index`` [n] (no grid: a subset of tokens is none)."""
        assert len(self) == 1, "tokens_at takes the tokens of one image"

        def take(value):
            return value[:, index.to(value.device)] if self.per_token(value) else value

        changed = {f.name: take(getattr(self, f.name)) for f in fields(self)
                   if f.name not in ("input_ids", "attention_mask", "grid", "token_counts")}
        return replace(self, **changed, grid=None, token_counts=torch.tensor([len(index)]))

    def subset(self, index: list[int]) -> Encoded:
        """Samples ``index`` alone, their tokens cut to the largest count among them."""
        n = int(self.token_counts[index].max()) if self.token_counts is not None else self.n_tokens
        rows = torch.tensor(index)

        def take(value):
            if isinstance(value, list):
                return [value[b] for b in index]
            if not isinstance(value, torch.Tensor):
                return value
            per_token = self.per_token(value)
            value = value[rows.to(value.device)]
            return value[:, :n] if per_token else value

        changed = {f.name: take(getattr(self, f.name)) for f in fields(self)
                   if f.name not in ("input_ids", "attention_mask", "pixel_values", "grid")}
        return replace(self, **changed, input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
                       pixel_values=self.pixel_values[rows.to(self.pixel_values.device)])


@dataclass
class Run:
    """A batch through encode -> compress -> generate: what went in, what the LLM saw, what it said, how long."""

    encoded: Encoded  # the encoders' outputs (images, questions, scores, grid)
    result: CompressionResult  # the batch's compression, with provenance
    texts: list[str]  # one generated answer per sample, special tokens removed
    seconds: dict[str, float]  # wall time of the whole batch per stage: vision (+ text), compress, generate
    method: str
    budget: int | None  # as asked: None lets adaptive methods choose K
    options: dict  # the method's options as given
    layer_seen: torch.Tensor | None = None  # [B, n_layers, N] bool: image token n entered LLM layer l (inside-LLM
    # methods; ``result`` is then what the last layer saw). None: every layer saw ``result``'s tokens
    n_layers: int = 0  # the LLM's decoder layers
    row_end_tokens: torch.Tensor | None = None  # [B] long: row-end tokens the LLM read besides the visual tokens

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def tokens_per_layer(self) -> torch.Tensor:
        """[B, n_layers] long: the visual tokens each LLM layer read (see CompressionResult.layer_counts)."""
        return self.result.layer_counts(self.n_layers)

    @property
    def equivalent_tokens(self) -> torch.Tensor:
        """[B] float: their mean over the layers, what the prefill pays for (n_output before the LLM)."""
        return self.result.equivalent_tokens(self.n_layers)

    def counts(self, b: int = 0) -> dict[str, int]:
        """Token counts of sample ``b`` in the LLM's units: ``n_input_tokens`` the image tokens the uncompressed
        model feeds its LLM, ``n_output_tokens`` those this run fed it (row-end tokens included where the family
        has them); in between, the result's kept / recovered / merged counts."""
        counts = self.result[b].counts(0)
        if self.encoded.n_llm_tokens is not None:
            counts["n_input_tokens"] = int(self.encoded.n_llm_tokens[b])
        if self.row_end_tokens is not None:
            counts["n_output_tokens"] += int(self.row_end_tokens[b])
        return counts


@dataclass
class LLMInput:
    """A left-padded batch as the LLM reads it."""

    embeds: torch.Tensor  # [B, L, H] inputs_embeds
    mask: torch.Tensor  # [B, L] 1 for real places
    places: torch.Tensor  # [B, L] long: the output slot at each place, -1 for text, row ends and padding
    positions: torch.Tensor | None  # [4, B, L] text positions then M-RoPE's three, for M-RoPE LLMs; None: 1-D


def text_and_rope_positions(rows: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """[4, B, L] the position ids an M-RoPE LLM's ``generate`` takes: the text positions (cumsum of the mask, 0 at
    padding), then the three M-RoPE rows, left-padded with 0. rows: per sample, [3, L_b] its places' positions."""
    B, L = mask.shape
    rope = torch.zeros(3, B, L, dtype=torch.long, device=mask.device)
    for b, row in enumerate(rows):
        rope[:, b, L - row.shape[1]:] = row
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # [B, L]
    return torch.cat([text[None], rope])


def stack_rows(parts: list[torch.Tensor], groups: list[list[int]], fill) -> torch.Tensor:
    """Tensors [B_g, T_g, ...] of sample groups -> one [B, max T_g, ...] in the samples' order, padded with ``fill``."""
    first = parts[0]
    sizes = [max(p.shape[d] for p in parts) for d in range(1, first.dim())]
    out = first.new_full((sum(len(g) for g in groups), *sizes), fill)
    for part, index in zip(parts, groups, strict=True):
        out[(torch.tensor(index), *(slice(0, n) for n in part.shape[1:]))] = part
    return out
