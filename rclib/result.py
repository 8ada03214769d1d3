"""The result of a compression, with provenance.

Every method returns a :class:`CompressionResult`. Its ``weights`` say how each output token is built
from the input tokens (``tokens == weights @ inputs``), its ``fate`` says what became of each input
token, and its ``slot`` says what each output slot is. A figure draws from these alone; nothing is
recomputed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import torch


class Fate(IntEnum):
    """What became of an input token. One colour per fate in every figure (see ``rclib.viz``)."""

    KEPT = 0  # kept as it is: by RC's visual ([CLS] attention) filter, by another method's own selection
    RECOVERED = 1  # passed on unchanged because the text information recovery chose it
    CENTRE = 2  # the seed of a merged output token (a KNN cluster centre, a VisionZip target)
    MERGED = 3  # absorbed into one or more merged output tokens
    DROPPED = 4  # contributes to no output token


class Slot(IntEnum):
    """What an output slot holds. KEPT, RECOVERED and CENTRE carry their Fate's numbers: a token that fills a slot of
    its own gives it the kind its fate says (the merging methods scatter the fates as the slot kinds)."""

    KEPT = 0  # an input token kept unchanged (by RC's visual filter, by another method's own selection)
    RECOVERED = 1  # an input token recovered by the text stage, unchanged
    CENTRE = 2  # a centre plus the tokens merged into it
    EXTRA = 3  # RC/PruMerge's extra token: the weighted sum of the remaining non-centre tokens
    POOLED = 4  # an average of a region (spatial pooling)
    PAD = 5  # padding, not a token: ``mask`` is False here


@dataclass
class CompressionResult:
    """Batched output of a compression method; output slots are padded to the largest K of the batch.

    ``tokens[b, :n_output[b]]`` is what the LLM sees for sample ``b``, in that order.
    """

    tokens: torch.Tensor  # [B, K, C] output tokens, zero in padded slots
    mask: torch.Tensor  # [B, K] bool, True for a real output slot (always a prefix of the row)
    weights: torch.Tensor  # [B, K, N] contribution of input token n to output slot k
    fate: torch.Tensor  # [B, N] long, a Fate per input token
    slot: torch.Tensor  # [B, K] long, a Slot per output slot
    method: str = "full"
    scores: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, N] scores it used
    tokens_per_layer: torch.Tensor | None = None  # [B, n_layers] long: the visual tokens each LLM layer read, for
    # methods that prune inside the LLM (the result is then what the last layer saw); None: every layer reads n_output

    def __post_init__(self):
        B, K, N = self.weights.shape
        assert self.tokens.shape[:2] == (B, K), f"tokens {tuple(self.tokens.shape)} vs weights {(B, K, N)}"
        assert self.mask.shape == (B, K) and self.slot.shape == (B, K), "mask and slot must be [B, K]"
        assert self.fate.shape == (B, N), f"fate must be [B, N] = {(B, N)}, got {tuple(self.fate.shape)}"
        assert self.tokens_per_layer is None or self.tokens_per_layer.shape[0] == B, "tokens_per_layer must be [B, L]"

    def __len__(self) -> int:
        return self.weights.shape[0]

    def __getitem__(self, b: int) -> CompressionResult:
        """Sample ``b`` alone, its padding trimmed."""
        k = int(self.mask[b].sum())
        return CompressionResult(
            tokens=self.tokens[b : b + 1, :k],
            mask=self.mask[b : b + 1, :k],
            weights=self.weights[b : b + 1, :k],
            fate=self.fate[b : b + 1],
            slot=self.slot[b : b + 1, :k],
            method=self.method,
            scores={name: s[b : b + 1] for name, s in self.scores.items()},
            tokens_per_layer=None if self.tokens_per_layer is None else self.tokens_per_layer[b : b + 1],
        )

    # Everything below is derived from the fields above.
    @property
    def n_input(self) -> int:
        return self.weights.shape[2]

    @property
    def n_output(self) -> torch.Tensor:
        """[B] number of output tokens per sample."""
        return self.mask.sum(1)

    @property
    def n_visual(self) -> torch.Tensor:
        """[B] tokens kept unchanged (Fate.KEPT): by the visual score for RC (hence the name), by its own selection for
        another method (``MethodSpec.kept_label`` says what picked them)."""
        return (self.fate == Fate.KEPT).sum(1)

    @property
    def n_text(self) -> torch.Tensor:
        """[B] tokens recovered by the text stage."""
        return (self.fate == Fate.RECOVERED).sum(1)

    @property
    def n_merged(self) -> torch.Tensor:
        """[B] output slots that are merges of several input tokens (centres, extra, pooled)."""
        merged = (self.slot == Slot.CENTRE) | (self.slot == Slot.EXTRA) | (self.slot == Slot.POOLED)
        return merged.sum(1)

    @property
    def kept_indices(self) -> list[torch.Tensor]:
        """Per sample, the original indices of the tokens kept unchanged (Fate.KEPT), ascending."""
        return [torch.nonzero(row == Fate.KEPT).flatten() for row in self.fate]

    @property
    def recovered_indices(self) -> list[torch.Tensor]:
        """Per sample, the original indices of the tokens recovered by text, ascending."""
        return [torch.nonzero(row == Fate.RECOVERED).flatten() for row in self.fate]

    @property
    def assignment(self) -> torch.Tensor:
        """[B, N] the output slot that takes the largest share of each input token, -1 if dropped.

        For merged tokens this is their cluster; a figure colours clusters by it.
        """
        if self.weights.shape[1] == 0:  # no output slot (an inside-LLM method whose last layer read no image token)
            return torch.full_like(self.fate, -1)
        share, slot = self.weights.max(dim=1)  # over output slots: [B, N]
        return torch.where(share > 0, slot, torch.full_like(slot, -1))

    def layer_counts(self, n_layers: int) -> torch.Tensor:
        """[B, n_layers] long: the visual tokens each of the LLM's ``n_layers`` layers reads, the one definition of
        a method's cost in tokens (constant n_output for methods before the LLM)."""
        if self.tokens_per_layer is not None:
            assert self.tokens_per_layer.shape[1] == n_layers, \
                f"this result was pruned in an LLM of {self.tokens_per_layer.shape[1]} layers, not {n_layers}"
            return self.tokens_per_layer
        return self.n_output[:, None].expand(-1, n_layers)

    def equivalent_tokens(self, n_layers: int) -> torch.Tensor:
        """[B] float: the mean over the LLM's layers of the visual tokens each reads (see :meth:`layer_counts`);
        n_output for methods before the LLM."""
        return self.layer_counts(n_layers).float().mean(1)

    def counts(self, b: int = 0) -> dict[str, int]:
        """Token counts of sample ``b``: in -> kept unchanged (n_visual) / text recovered / merged -> out."""
        return {
            "n_input_tokens": self.n_input,
            "n_visual": int(self.n_visual[b]),
            "n_text": int(self.n_text[b]),
            "n_merged": int(self.n_merged[b]),
            "n_output_tokens": int(self.n_output[b]),
        }


def evidence_recall(fate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] share of each row's target patches that reach the LLM in any form (any fate but DROPPED).

    fate [B, N] long, target [B, N] bool. A row with an empty target gives NaN: callers average over
    the rows that have a target.
    """
    reached = (fate != Fate.DROPPED) & target
    return reached.sum(1) / target.sum(1)


def evidence_kept(fate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] share of each row's target patches that reach the LLM as themselves (kept, recovered, a centre).

    fate [B, N] long, target [B, N] bool; NaN for a row with an empty target, as in :func:`evidence_recall`.
    """
    as_itself = ((fate == Fate.KEPT) | (fate == Fate.RECOVERED) | (fate == Fate.CENTRE)) & target
    return as_itself.sum(1) / target.sum(1)


def from_weights(inputs: torch.Tensor, weights: torch.Tensor, slot: torch.Tensor, fate: torch.Tensor,
                 method: str, scores: dict[str, torch.Tensor] | None = None) -> CompressionResult:
    """Build a result whose output tokens are ``weights`` applied to ``inputs``.

    inputs [B, N, C]; weights [B, K, N] (zero rows in padded slots); slot [B, K] (Slot.PAD where padded).
    """
    mask = slot != int(Slot.PAD)  # an int: torch.compile traces a comparison with an IntEnum as a Python bool
    tokens = torch.bmm(weights.to(inputs.dtype), inputs)  # [B, K, N] @ [B, N, C] -> [B, K, C]
    return CompressionResult(tokens=tokens, mask=mask, weights=weights, fate=fate, slot=slot,
                             method=method, scores=scores or {})


def stack_results(parts: list[CompressionResult], groups: list[list[int]]) -> CompressionResult:
    """One result from the results of sample groups (``groups[g]``: the batch rows of ``parts[g]``), in the
    samples' order, padded to the largest K and N (padded inputs: DROPPED, padded slots: PAD)."""
    B = sum(len(g) for g in groups)
    K = max(p.weights.shape[1] for p in parts)
    N = max(p.weights.shape[2] for p in parts)
    first = parts[0]
    C = first.tokens.shape[2]
    out = CompressionResult(
        tokens=first.tokens.new_zeros(B, K, C), mask=first.mask.new_zeros(B, K), weights=first.weights.new_zeros(B, K, N),
        fate=first.fate.new_full((B, N), int(Fate.DROPPED)), slot=first.slot.new_full((B, K), int(Slot.PAD)),
        method=first.method, scores={name: s.new_zeros(B, N) for name, s in first.scores.items()},
        tokens_per_layer=None if first.tokens_per_layer is None else first.tokens_per_layer.new_zeros(
            B, first.tokens_per_layer.shape[1]))
    for part, index in zip(parts, groups, strict=True):
        rows = torch.tensor(index, device=part.weights.device)
        k, n = part.weights.shape[1:]
        out.tokens[rows, :k] = part.tokens
        out.mask[rows, :k] = part.mask
        out.weights[rows, :k, :n] = part.weights
        out.fate[rows, :n] = part.fate
        out.slot[rows, :k] = part.slot
        for name, score in part.scores.items():
            out.scores[name][rows, :n] = score.to(out.scores[name].dtype)
        if part.tokens_per_layer is not None:
            out.tokens_per_layer[rows] = part.tokens_per_layer
    return out


def join_slots(parts: list[tuple[torch.Tensor, CompressionResult]], n_input: int) -> CompressionResult:
    """One sample's result from the results of disjoint subsets of its tokens, their slots one after another.

    parts: (index [n_p] long, the subset's input tokens among the sample's ``n_input``; its result, one sample).
    """
    first = parts[0][1]
    K = sum(int(result.n_output[0]) for _, result in parts)
    weights = first.weights.new_zeros(1, K, n_input)
    fate = first.fate.new_full((1, n_input), int(Fate.DROPPED))
    scores = {name: score.new_zeros(1, n_input) for name, score in first.scores.items()}
    start = 0
    for index, result in parts:
        k = int(result.n_output[0])
        weights[0, start:start + k, index.to(weights.device)] = result.weights[0, :k]
        fate[0, index.to(fate.device)] = result.fate[0]
        for name, score in result.scores.items():
            scores[name][0, index.to(score.device)] = score[0].to(scores[name].dtype)
        start += k
    trimmed = [result[0] for _, result in parts]
    return CompressionResult(tokens=torch.cat([r.tokens for r in trimmed], 1), mask=torch.cat([r.mask for r in trimmed], 1),
                             weights=weights, fate=fate, slot=torch.cat([r.slot for r in trimmed], 1),
                             method=first.method, scores=scores)
