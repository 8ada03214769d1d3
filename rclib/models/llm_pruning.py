"""Pruning image tokens inside the LLM: a layer-by-layer prefill that can drop tokens between two decoder
layers, then greedy decoding with the pruned KV cache.

FastV (and SparseVLM) decide between decoder layers which image tokens the later layers see, from the
attention that some queries (the last token, the question's words) paid at the layer before.
transformers' ``generate`` cannot change the sequence between layers, so :func:`generate_pruned` runs the
language model's own modules (decoder layers, rotary embedding, final norm, ``lm_head``) itself:

- every layer runs through its own attention implementation (SDPA for rclib's checkpoints) with an
  explicit additive mask; the attention weights of the one layer before a pruning step are computed
  apart, for the few query rows needed only, from that layer's q projection and the keys it just cached;
- pruning keeps the original rotary positions of the kept tokens (as FastV does), so a pruned sequence is
  the full one with holes;
- the KV cache of a layer holds exactly the tokens that layer saw: layers before the pruning step keep
  every token, layers after it only the kept ones, and every new token attends to that layer's cache;
- a batch is left-padded, each row prunes its own count, rows are re-packed to the left after pruning.
  With nothing pruned the answers equal ``LlavaForConditionalGeneration.generate``'s;
- a pruner may also *recycle*: merge some pruned places into a few new image places (SparseVLM), which
  enter the next layer right after the last image place, at the rotary position of a place they chose;
- what a pruner reads is its ``source``: the attention rows of the layer before (FastV, SparseVLM; the default),
  the rows of the layer about to run, from its own q and k projections of its input (PyramidDrop), or no
  attention at all: the layer before's cached keys and the hidden states entering the layer (DART).

Every layer's count of visual places (image tokens and recycled ones) is recorded: the tokens it read.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import torch


RECYCLED = -2  # Sequence.image of a place made by merging pruned image places


def gather_places(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """values [B, L, ...] at the places ``order`` [B, L'] -> [B, L', ...]."""
    index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand(*order.shape, *values.shape[2:])
    return values.gather(1, index)


def rotary_positions(position: torch.Tensor) -> torch.Tensor:
    """Positions [B, L, P] as the LLM's rotary embedding takes them: [B, L] (P = 1), M-RoPE's [3, B, L] (P = 3)."""
    return position[..., 0] if position.shape[2] == 1 else position.permute(2, 0, 1)


@dataclass
class Sequence:
    """The left-padded sequence a run of decoder layers sees; row b is sample b."""

    hidden: torch.Tensor  # [B, L, H] hidden states
    position: torch.Tensor  # [B, L, P] long rotary positions (original ones; padding: 0): P = 1, or M-RoPE's 3
    real: torch.Tensor  # [B, L] bool, False on padding
    image: torch.Tensor  # [B, L] long, the image token index 0..N-1 at this place, -1 for text and padding,
    # RECYCLED (-2) for a place a pruner made by merging pruned image places

    @property
    def visual(self) -> torch.Tensor:
        """[B, L] bool: the real places that hold image content (image tokens and recycled places)."""
        return (self.image != -1) & self.real

    def merged(self, weights: torch.Tensor, origin: torch.Tensor) -> Sequence:
        """M new RECYCLED places per row made from this sequence's places.

        weights [B, M, L]: new place m is sum_l weights[b, m, l] * hidden[b, l]; origin [B, M] long: the place
        whose rotary position it takes, -1 for no new place (a padding slot).
        """
        real = origin >= 0
        at = origin.clamp(min=0)[:, :, None].expand(-1, -1, self.position.shape[2])  # [B, M, P]
        return Sequence(hidden=weights.to(self.hidden.dtype) @ self.hidden,  # [B, M, L] @ [B, L, H] -> [B, M, H]
                        position=self.position.gather(1, at).masked_fill(~real[:, :, None], 0), real=real,
                        image=torch.full_like(origin, RECYCLED).masked_fill(~real, -1))

    def insert(self, new: Sequence) -> Sequence:
        """The places of ``new`` (M per row) right after each row's last visual place, re-packed to the left."""
        L, M = self.real.shape[1], new.real.shape[1]
        index = torch.arange(L, device=self.real.device)
        after = torch.where(self.visual, index, -1).max(1).values[:, None]  # [B, 1] the last visual place (-1: none)
        j = torch.arange(L + M, device=self.real.device)[None]  # [1, L + M] places of the longer row
        order = torch.where((j > after) & (j <= after + M), L + j - after - 1,
                            torch.where(j <= after, j, j - M))  # [B, L + M] into cat(self, new)
        joined = Sequence(*(gather_places(torch.cat([getattr(self, name), getattr(new, name)], 1), order)
                            for name in ("hidden", "position", "real", "image")))
        return joined.select(joined.real)

    def select(self, keep: torch.Tensor) -> Sequence:
        """The rows with only the ``keep`` [B, L] tokens (order kept), re-packed to the left-padded layout."""
        keep = keep & self.real
        length = int(keep.sum(1).max())
        order = keep.long().argsort(dim=1, stable=True)[:, -length:]  # [B, L'] dropped first, kept last, in order
        real = keep.gather(1, order)
        return Sequence(hidden=gather_places(self.hidden, order),
                        position=gather_places(self.position, order).masked_fill(~real[:, :, None], 0), real=real,
                        image=self.image.gather(1, order).masked_fill(~real, -1))

    def on_image(self, values: torch.Tensor, n_image: int) -> torch.Tensor:
        """Per-place values [B, L] laid out on the N image tokens: [B, N], zero (False) for tokens not here."""
        out = values.new_zeros(values.shape[0], n_image + 1)
        return out.scatter_(1, torch.where(self.image < 0, n_image, self.image), values)[:, :n_image]


SOURCES = ("attention", "own_attention", "states")  # what a pruner reads at a pruning step (Pruner.source)


@dataclass
class States:
    """What a pruner with ``source = "states"`` reads before decoder layer ``layer``: no attention weights."""

    keys: torch.Tensor  # [B, kv_heads, L, d] the rotated keys layer ``layer - 1`` cached
    normed: torch.Tensor  # [B, L, H] the hidden states entering layer ``layer``, through the LLM's final norm


class Pruner(Protocol):
    """What an inside-LLM method decides; :func:`generate_pruned` does the rest. Every pruner derives from
    :class:`rclib.methods.pruner.PrunerBase`, which gives ``source``, ``for_depth`` and ``recycle`` their defaults."""

    layers: tuple[int, ...]  # prune before these decoder layers, ascending, each >= 1
    source: str  # one of SOURCES: "attention" passes ``keep`` the attention rows of layer ``layer - 1``,
    # "own_attention" those of layer ``layer`` on its input, "states" a :class:`States`

    def for_depth(self, n_layers: int) -> Pruner:
        """The plan for an LLM of ``n_layers`` decoder layers (plans made for another depth move)."""

    def queries(self, layer: int, sequence: Sequence) -> torch.Tensor:
        """[B, Q] places in ``sequence`` whose attention rows at decoder layer ``layer - 1`` are read; -1 pads a
        row that reads fewer than Q (its attention rows are zero)."""

    def keep(self, layer: int, attention: torch.Tensor, sequence: Sequence) -> torch.Tensor:
        """[B, L] bool: the places layers ``layer`` on see; attention [B, Q, L] is the head mean (a
        :class:`States` for a pruner whose source is "states")."""

    def recycle(self, layer: int, attention: torch.Tensor, sequence: Sequence, keep: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(weights [B, M, L], origin [B, M]): M new places merged from the hidden states entering layer ``layer``
        (see :meth:`Sequence.merged`, :meth:`Sequence.insert`); None: nothing recycled."""


@dataclass
class PrunedGeneration:
    """What :func:`generate_pruned` returns."""

    ids: torch.Tensor  # [B, T] new token ids, pad-filled after EOS
    seen: torch.Tensor  # [B, n_layers, N] bool: image token n entered decoder layer l (prefill)
    visual_tokens: torch.Tensor  # [B, n_layers] long: the visual places (image and recycled) layer l read (prefill)
    scores: dict[str, torch.Tensor]  # "llm_attention_layer{l}" -> [B, N] float32: the attention the queries
    # paid each image token in layer l (mean over a row's queries and the heads; 0 for tokens already pruned)


def causal_bias(real: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] additive mask: place i attends place j <= i that is real; padding attends itself only."""
    L = real.shape[1]
    index = torch.arange(L, device=real.device)
    allowed = (index[:, None] >= index[None, :]) & (real[:, None, :] | (index[:, None] == index[None, :]))
    return additive(allowed[:, None], dtype)


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as an additive one (0 where allowed), for every attention implementation."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def attention_keys(attention, normed: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The rotated keys [B, kv_heads, L, d] an attention module computes from its input normed [B, L, H] (the
    decoder layer's hidden states after its input layernorm)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # only when pruning runs

    B, L, _ = normed.shape
    keys = attention.k_proj(normed).view(B, L, -1, attention.head_dim).transpose(1, 2)  # [B, kv_heads, L, d]
    return apply_rotary_pos_emb(keys, keys, *rotary)[1]


def attention_rows(attention, normed: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor,
                   real: torch.Tensor, keys: torch.Tensor | None = None, head: int | None = None) -> torch.Tensor:
    """The attention weights of the query places ``rows`` [B, Q] in one attention module, as the module computes
    them (q projection, rotary embedding, causal and padding masks): every head's [B, heads, Q, L] float32, or
    ``head``'s alone [B, Q, L].

    normed [B, L, H] is the module's input (the decoder layer's hidden states after its input layernorm); rotary the
    (cos, sin) [B, L, d] of the sequence; real [B, L] its non-padding places; keys [B, kv_heads, L, d] its rotated
    keys (the layer's cache), None for the module's own keys of normed (:func:`attention_keys`). A row -1 attends
    no place (its weights are NaN: mask it out). Only the Q rows' weights are computed, so the layer itself can run
    any attention kernel; they keep their gradients (training supervises them).
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv  # only when pruning runs

    B, L, _ = normed.shape
    d = attention.head_dim
    query = attention.q_proj(normed).view(B, L, -1, d).transpose(1, 2)  # [B, heads, L, d]
    if keys is None:  # projected after the queries, as the layer does: the gradients of normed sum in its order
        keys = attention_keys(attention, normed, rotary)
    query, _ = apply_rotary_pos_emb(query, query, *rotary)
    keys = repeat_kv(keys, query.shape[1] // keys.shape[1])  # [B, heads, L, d]
    if head is not None:
        query, keys = query[:, head, None], keys[:, head, None]  # [B, 1, L, d]
    at = rows.clamp(min=0)[:, None, :, None]  # [B, 1, Q, 1]
    query = query.gather(2, at.expand(-1, query.shape[1], -1, d))  # [B, heads, Q, d]
    logits = (query.float() @ keys.float().transpose(2, 3)) * attention.scaling  # [B, heads, Q, L]
    index = torch.arange(keys.shape[2], device=rows.device)
    allowed = (index[None, None, :] <= rows[:, :, None]) & real[:, None, :]  # [B, Q, L] causal, no padding
    weights = logits.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    return weights if head is None else weights[:, 0]


def pruning_evidence(pruner, language_model, index: int, sequence: Sequence, layer_input: torch.Tensor, cache,
                     rotary: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor | States, str, torch.Tensor]:
    """What ``pruner`` reads before decoder layer ``index`` (see :data:`SOURCES`): (attention [B, Q, L] or
    States, the name of the layer it comes from, the [B, L] per-place score recorded for figures)."""
    source = pruner.source
    layers = language_model.layers
    if source == "states":
        keys = cache.layers[index - 1].keys
        states = States(keys=keys, normed=language_model.norm(sequence.hidden))
        return states, f"llm_key_norm_layer{index - 1}", keys.float().abs().sum((1, 3))  # [B, L] L1 norm
    rows = pruner.queries(index, sequence)
    read = rows >= 0  # [B, Q]
    if source == "own_attention":
        layer, hidden, keys, name = layers[index], sequence.hidden, None, index
    else:
        layer, hidden, keys, name = layers[index - 1], layer_input, cache.layers[index - 1].keys, index - 1
    attention = torch.where(read[:, :, None], attention_rows(  # [B, Q, L] head mean, zero rows where none is read
        layer.self_attn, layer.input_layernorm(hidden), rotary, rows, sequence.real, keys).mean(1), 0.0)
    mean = attention.sum(1) / read.sum(1, keepdim=True).clamp(min=1)  # [B, L] over the rows read
    return attention, f"llm_attention_layer{name}", mean


@torch.no_grad()
def generate_pruned(language_model, lm_head, embeds: torch.Tensor, mask: torch.Tensor, image: torch.Tensor,
                    pruner: Pruner, n_image: int, max_new_tokens: int, eos_ids: list[int], pad_id: int,
                    positions: torch.Tensor | None = None) -> PrunedGeneration:
    """Greedy decoding of a decoder-only ``language_model`` (transformers' LlamaModel or alike) that prunes
    its input between layers as ``pruner`` decides.

    embeds [B, L, H] left-padded inputs, mask [B, L] (1 = real), image [B, L] the image token index of each
    place (-1 elsewhere), n_image N. positions: M-RoPE's [3, B, L] for LLMs that place tokens in 3-D (Qwen2.5-VL),
    None for cumsum(mask) - 1, as ``generate`` numbers a left-padded batch. The KV cache of each layer holds the
    places that layer saw.
    """
    layers = language_model.layers
    pruner = pruner.for_depth(len(layers))  # plans made for another depth
    if not pruner.layers or pruner.layers[0] < 1 or pruner.layers[-1] >= len(layers):
        raise ValueError(f"pruning layers {pruner.layers} must lie in 1..{len(layers) - 1} for a language model of "
                         f"{len(layers)} decoder layers (the attention of the layer before decides)")
    real = mask.bool()
    position = (mask.long().cumsum(1) - 1).clamp(min=0)[:, :, None] if positions is None else positions.permute(1, 2, 0)
    sequence = Sequence(embeds, position, real, image.masked_fill(~real, -1))  # position [B, L, P]
    next_position = sequence.position[:, -1] + 1  # [B, P] the first new token's position (after text: all equal)
    from transformers.cache_utils import DynamicCache  # only when pruning runs: importing rclib stays light

    cache = DynamicCache(config=language_model.config)
    key_real = []  # per layer: [B, L_l] the real places of its cache
    seen, visual, scores = [], [], {}
    rotary = language_model.rotary_emb(sequence.hidden, rotary_positions(sequence.position))
    bias = causal_bias(sequence.real, embeds.dtype)
    layer_input = None  # what the previous layer read (set at the end of each step; pruning starts at layer 1)
    for index, layer in enumerate(layers):
        if index in pruner.layers:
            attention, name, score = pruning_evidence(pruner, language_model, index, sequence, layer_input, cache,
                                                      rotary)
            scores[name] = sequence.on_image(score, n_image)
            keep = pruner.keep(index, attention, sequence)
            merges = pruner.recycle(index, attention, sequence, keep)
            recycled = None if merges is None else sequence.merged(*merges)
            sequence = sequence.select(keep)
            sequence = sequence.insert(recycled) if recycled else sequence
            rotary = language_model.rotary_emb(sequence.hidden, rotary_positions(sequence.position))
            bias = causal_bias(sequence.real, embeds.dtype)
        layer_input = sequence.hidden
        hidden = layer(layer_input, attention_mask=bias, position_ids=rotary_positions(sequence.position),
                       past_key_values=cache,
                       use_cache=True, position_embeddings=rotary)
        sequence = replace(sequence, hidden=hidden)
        key_real.append(sequence.real)
        seen.append(sequence.on_image(sequence.real, n_image))
        visual.append(sequence.visual.sum(1))

    eos = torch.tensor(eos_ids, device=embeds.device)
    unfinished = torch.ones(len(embeds), dtype=torch.bool, device=embeds.device)
    hidden, new_ids = sequence.hidden[:, -1:], []
    for step in range(max_new_tokens):
        logits = lm_head(language_model.norm(hidden[:, -1]))  # [B, vocab]
        token = torch.where(unfinished, logits.argmax(-1), pad_id)
        new_ids.append(token)
        unfinished &= ~torch.isin(token, eos)
        if step == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        position = rotary_positions((next_position + step)[:, None])  # [B, 1, P] -> the rotary's layout
        hidden = language_model.embed_tokens(token)[:, None]  # [B, 1, H]
        rotary = language_model.rotary_emb(hidden, position)
        for index, layer in enumerate(layers):
            key_real[index] = torch.cat([key_real[index], key_real[index].new_ones(len(token), 1)], 1)
            hidden = layer(hidden, attention_mask=additive(key_real[index][:, None, None], hidden.dtype),
                           position_ids=position, past_key_values=cache, use_cache=True, position_embeddings=rotary)
    return PrunedGeneration(ids=torch.stack(new_ids, 1), seen=torch.stack(seen, 1), visual_tokens=torch.stack(visual, 1),
                            scores=scores)
