"""Pieces the methods share: laying selected tokens out in output slots, and the KNN merge.

Every method ends the same way: some input tokens go to output slots unchanged, some output slots are
weighted sums of input tokens. Methods describe that as *entries* (output row, input column, weight)
and :func:`assemble` turns them into a :class:`~rclib.result.CompressionResult`, so provenance is
built once, the same way, for all of them.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from rclib.filters import descending_rank
from rclib.methods.registry import Control
from rclib.result import CompressionResult, Fate, Slot, from_weights


@dataclass
class Entries:
    """Weights of output slots, as lists: ``weights[b, row[b, e], col[b, e]] += value[b, e]``.

    Entries with ``row == -1`` are ignored (a vectorised way to say "nothing here").
    """

    row: torch.Tensor  # [B, E] long, output slot or -1
    col: torch.Tensor  # [B, E] long, input token
    value: torch.Tensor  # [B, E] float

    @staticmethod
    def cat(parts: list[Entries]) -> Entries:
        return Entries(*(torch.cat([getattr(p, f) for p in parts], dim=1) for f in ("row", "col", "value")))


def slot_positions(groups: list[torch.Tensor], orders: list[torch.Tensor | None] | None = None
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Output positions of tokens selected by consecutive groups.

    groups: list of [B, N] bool masks, in output order (disjoint). orders: per group, None for the
    original (raster) order within the group, or [B, N] scores for descending score order (ties: lower
    index first); default all None. Returns, per group, [B, N] long: the slots of its tokens and of the
    later groups' tokens, -1 for the others (so the first group's places every selected token, the last
    group's only its own); and [B, 1] the number of slots the groups use.
    """
    orders = orders or [None] * len(groups)
    ranks = [g.cumsum(1) if order is None else descending_rank(order, g) + 1  # [B, N] 1-based within the group
             for g, order in zip(groups, orders, strict=True)]
    # [B, 1] the slots of the groups before each (a host 0 for the first), and of all of them
    starts = [0, *itertools.accumulate(g.sum(1, keepdim=True) for g in groups)]
    positions, later = [], -1  # later: the slots of the later groups' tokens
    for g, rank, start in reversed(list(zip(groups, ranks, starts))):
        later = torch.where(g, rank + (start - 1), later)
        positions.append(later)
    return positions[::-1], starts[-1]


def token_columns(like: torch.Tensor) -> torch.Tensor:
    """[B, N] long: n at [b, n], for ``like`` [B, N] (an expanded view of one arange)."""
    return torch.arange(like.shape[1], device=like.device).expand_as(like)


def assemble(inputs: torch.Tensor, entries: Entries, slot_rows: torch.Tensor, slot_kinds: torch.Tensor,
             n_slots: torch.Tensor | None, fate: torch.Tensor, method: str,
             scores: dict[str, torch.Tensor], K: int | None = None) -> CompressionResult:
    """Scatter weight entries into a [B, K, N] matrix and apply it to ``inputs`` [B, N, C].

    slot_rows / slot_kinds [B, S]: the Slot kind of output row ``slot_rows[b, s]`` (-1: ignore).
    n_slots [B]: slots used per sample (None when K is given). K: their maximum when the caller knows it on
    the host (a fixed budget); None reads it from n_slots (the one host sync, for the output shape).
    """
    B, N, _ = inputs.shape
    if K is None or not B:  # an empty batch has no slots
        K = int(n_slots.max()) if B else 0
    # rows of -1 wrap around to row K, an extra row cut off below
    weights = torch.zeros(B, (K + 1) * N, dtype=torch.float32, device=inputs.device)
    weights.scatter_add_(1, torch.add(entries.col, entries.row.remainder(K + 1), alpha=N), entries.value.float())
    weights = weights.view(B, K + 1, N)[:, :K]  # [B, K, N]

    slot = torch.full((B, K + 1), int(Slot.PAD), dtype=torch.long, device=inputs.device)
    slot.scatter_(1, slot_rows.remainder(K + 1), slot_kinds)
    return from_weights(inputs, weights, slot[:, :K], fate, method, scores)


def most_true(mask: torch.Tensor, known: int | None = None) -> int:
    """The most True values in a row of ``mask`` [B, N]: ``known`` when the caller has it on the host, else
    counted on the device and read (a host sync); 0 for an empty batch."""
    return known if known is not None else batch_maxima([mask.sum(1)], mask.shape[1] + 1)[0]


def batch_maxima(counts: list[torch.Tensor], bound: int) -> list[int]:
    """The largest value of each of ``counts`` ([B] or [B, 1] long, each value in 0 .. bound - 1) as host ints, read
    with one host sync: the maxima are packed on the device into one number, its digits in base ``bound``; zeros
    for an empty batch."""
    if not counts[0].shape[0]:
        return [0] * len(counts)
    number = int(functools.reduce(lambda packed, high: packed * bound + high, [count.max() for count in counts]))
    maxima = []
    for _ in counts:
        number, last = divmod(number, bound)
        maxima.append(last)
    return maxima[::-1]


def keep_and_drop(inputs: torch.Tensor, keep: torch.Tensor, method: str,
                  scores: dict[str, torch.Tensor], K: int | None = None) -> CompressionResult:
    """Selection-only methods: tokens in ``keep`` [B, N] pass unchanged in original order, the rest drop.

    K: the most tokens a row keeps, when the caller knows it on the host (no host sync); None counts them.
    """
    B, N, _ = inputs.shape
    K = most_true(keep, K)
    index, valid = true_first(keep, K)  # [B, K] the kept tokens, original order
    weights = torch.zeros(B, K, N, dtype=torch.float32, device=inputs.device)
    weights.scatter_(2, index[:, :, None], valid[:, :, None].float())  # [B, K, N] one 1 per kept token
    slot = torch.full_like(index, int(Slot.PAD)).masked_fill_(valid, int(Slot.KEPT))
    fate = torch.full_like(keep, int(Fate.DROPPED), dtype=torch.long).masked_fill_(keep, int(Fate.KEPT))
    return from_weights(inputs, weights, slot, fate, method, scores)


def true_first(mask: torch.Tensor, M: int) -> tuple[torch.Tensor, torch.Tensor]:
    """index [B, M] long: the True positions of each row of ``mask`` [B, N] in original order, then (padding)
    False ones (:func:`true_index`); valid [B, M] bool: which are True."""
    index = true_index(mask, M)
    return index, mask.gather(1, index)


def true_index(mask: torch.Tensor, M: int) -> torch.Tensor:
    """[B, M] long: the True positions of each row of ``mask`` [B, N] in original order, then (padding) False ones."""
    return mask.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :M]


def centre_rows(centres: torch.Tensor, M: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The centres of each row in original order, padded to the batch's largest count M.

    centres [B, N] bool -> index [B, M] long (padding points at non-centres), valid [B, M] bool. M: known on
    the host (a fixed budget), or None to read it (one sync), so that the similarity holds the centres' rows only.
    """
    return true_first(centres, most_true(centres, M))


def knn_merge_entries(score: torch.Tensor, centre_slot: torch.Tensor, weight: torch.Tensor, k: int) -> Entries:
    """Each centre absorbs its ``k`` best-scoring candidates j, weighted by ``weight`` [B, N] (CLS attention,
    not normalised): merged = x_i + sum_j w_j x_j (the centre's own weight 1 is not an entry here).

    score [B, M, N]: row: centre, column: candidate, -inf where not a candidate (the centre itself, tokens outside
    the pool); centre_slot [B, M]: each centre's output slot, -1 for a padding row. A centre with fewer than k
    candidates skips its -inf picks.
    """
    best, nbr = score.topk(min(k, score.shape[2] - 1), dim=2)  # [B, M, k]
    row = torch.where(best > float("-inf"), centre_slot[:, :, None], -1).flatten(1)  # [B, M k]
    nbr = nbr.flatten(1)
    return Entries(row, nbr, weight.gather(1, nbr))


def cosine_matrix(keys: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """[B, R, N] cosine similarity between the keys [B, N, Ck] of the tokens ``rows`` [B, R] (default:
    all, R = N) and the keys of all tokens.

    The dot products are divided by the norms afterwards: no normalised copy of the keys is made.
    """
    keys = keys.float()
    norms = keys.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # [B, N, 1], clamped as torch.nn.functional.normalize does
    if rows is None:
        picked, picked_norms = keys, norms
    else:
        rows = rows[:, :, None]  # [B, R, 1]
        picked, picked_norms = keys.gather(1, rows.expand(-1, -1, keys.shape[-1])), norms.gather(1, rows)
    return torch.bmm(picked, keys.transpose(1, 2)) / picked_norms / norms.transpose(1, 2)


ADAPTIVE = "adaptive"  # the budget word for "the method chooses K" (budget=None)
DEFAULT_SHARE = (64, 576)  # LLaVA-1.5's usual 64-token setting, as a share of the 576 CLIP-L/336 tokens


def layer_at_depth(layer: int, depth: int, n_layers: int) -> int:
    """Decoder layer ``layer`` of an LLM ``depth`` layers deep, moved to the same relative depth of one
    ``n_layers`` deep, within 1..n_layers-1 (where a pruning step can go: the layer before decides)."""
    return min(n_layers - 1, max(1, round(layer * n_layers / depth)))


def default_budget(n_tokens: int) -> int:
    """K for a fixed-budget method given no budget: 64 of 576, the same share of other grids."""
    return max(1, round(n_tokens * DEFAULT_SHARE[0] / DEFAULT_SHARE[1]))


def parse_budget(text: str | int | None, n_tokens: int) -> int | None:
    """A budget as users write it -> K: "adaptive" / None -> None, "64" -> 64, "64/576" -> that share of n_tokens.

    Raises ValueError (saying what is accepted) for anything else, a zero or negative K or a zero denominator.
    """
    if text is None or text == ADAPTIVE:
        return None
    words = str(text).split("/")
    try:
        numbers = [float(w) if len(words) == 2 else int(w) for w in words]
    except ValueError:
        numbers = []
    if len(words) > 2 or not numbers or any(x != x or x in (float("inf"), float("-inf")) for x in numbers):
        raise ValueError(f"budget {text!r} is not 'adaptive', a token count like 64, or a share like 64/576")
    if len(numbers) == 2 and numbers[1] <= 0:
        raise ValueError(f"budget {text!r}: the denominator of a share must be a positive token count")
    if numbers[0] <= 0:
        raise ValueError(f"budget {text!r}: K must be at least 1 token")
    return numbers[0] if len(numbers) == 1 else max(1, round(n_tokens * numbers[0] / numbers[1]))


def budget_tensor(budget: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """A per-sample budget [B] from an int or a tensor; raises ValueError unless every K >= 1 (an int is
    checked on the host and filled on the device: no copy, no sync)."""
    if not isinstance(budget, torch.Tensor):
        return torch.full((batch,), budget_int(budget), dtype=torch.long, device=device)
    budget = torch.as_tensor(budget, dtype=torch.long, device=device).expand(batch)
    if not bool((budget >= 1).all()):
        raise ValueError(f"budget must be >= 1 token per sample, got {budget.tolist()}")
    return budget


def budget_int(budget: int | torch.Tensor, n_tokens: int | None = None) -> int:
    """A fixed budget as a host int: ``budget`` (a one-element tensor is read: a host sync), or
    :func:`default_budget` of ``n_tokens`` for None; raises ValueError unless >= 1."""
    k = default_budget(n_tokens) if budget is None and n_tokens is not None else int(budget)
    if k < 1:
        raise ValueError(f"budget must be >= 1 token per sample, got {budget}")
    return k


EXTRA_TOKEN_RULES = ("if_absorbed", "if_centres")  # when merge_into_centres emits the extra token
KNN_K_CONTROL = Control("KNN k (merge)", "int", low=1, high=64)  # the explorer's knn_k: neighbours a centre absorbs
IQR_FACTOR_CONTROL = Control("IQR factor", "float", low=0.0, high=4.0, step=0.25, when=("rule", "iqr"))


def merge_into_centres(tokens: torch.Tensor, weight: torch.Tensor, kept: torch.Tensor, recovered: torch.Tensor,
                       centres: torch.Tensor, pool: torch.Tensor, keys: torch.Tensor, text_bias: torch.Tensor | None,
                       k: int, method: str, scores: dict[str, torch.Tensor], centre_order: torch.Tensor | None = None,
                       extra_token: str = "if_absorbed", sizes: tuple[int, int] | None = None) -> CompressionResult:
    """The token merger of RC and PruMerge: [kept and recovered, original order] + [centres] + [extra].

    kept, recovered, centres, pool: [B, N] bool (centres within pool, pool the tokens neither kept nor
    recovered). Each centre absorbs the ``k`` other tokens j of the pool with the highest
    cos(key_i, key_j) + text_bias_j (keys [B, N, Ck]; text_bias [B, N] or None); the pool's non-centre
    tokens also form one extra token. ``weight`` [B, N] is the CLS attention.
    centre_order: None puts the centres in original order; [B, N] scores put them in descending score
    order (what ``topk`` returns). extra_token: "if_absorbed" emits the extra token when some pool token
    is not a centre; "if_centres" when some centre was chosen (then it is a zero token if every pool
    token is a centre, and without centres the pool's tokens are dropped). sizes: (M, K), the most centres
    and output slots of a row, when the caller knows them on the host (:func:`merge_sizes`); None reads them
    from the device (one host sync).
    """
    assert extra_token in EXTRA_TOKEN_RULES, f"extra_token must be one of {EXTRA_TOKEN_RULES}, got {extra_token!r}"
    absorbed = pool ^ centres  # [B, N] the pool's other tokens (the centres lie within it)
    selected = ~pool  # [B, N] kept or recovered
    (own, centre_pos), n_slots = slot_positions([selected, centres], [None, centre_order])  # [B, N] each token's slot
    has_extra = (absorbed if extra_token == "if_absorbed" else centres).any(1, keepdim=True)  # [B, 1]
    extra_pos = torch.where(has_extra, n_slots, -1)  # [B, 1]
    M, K = sizes or batch_maxima([centres.sum(1), n_slots + has_extra], tokens.shape[1] + 2)
    centre_index = true_index(centres, M)  # [B, M] the centres in original order (padding: other tokens)
    # [B, M, N] a centre's score of each candidate: cos(key_i, key_j) + text_bias_j, -inf outside the pool and itself
    bias = (torch.zeros_like(weight) if text_bias is None else text_bias).masked_fill(selected, float("-inf"))
    score = (cosine_matrix(keys, centre_index) + bias[:, None, :]).scatter_(2, centre_index[:, :, None], float("-inf"))
    fate = torch.full_like(own, int(Fate.DROPPED))
    merged = absorbed & has_extra  # without an extra token (and so without centres) the pool is dropped
    for mask, f in ((merged, Fate.MERGED), (kept, Fate.KEPT), (recovered, Fate.RECOVERED), (centres, Fate.CENTRE)):
        fate = fate.masked_fill_(mask, int(f))
    entries = Entries.cat([  # each token in its own slot (weight 1) or in the extra one (its weight), then the KNN
        Entries(torch.where(absorbed, extra_pos, own), token_columns(own), torch.where(absorbed, weight, 1.0)),
        knn_merge_entries(score, centre_pos.gather(1, centre_index), weight, k),
    ])
    slot_rows = torch.cat([own, extra_pos], 1)
    slot_kinds = torch.cat([fate, torch.full_like(extra_pos, int(Slot.EXTRA))], 1)  # a token's fate: its slot's kind
    return assemble(tokens, entries, slot_rows, slot_kinds, None, fate, method, scores, K=K)


def merge_sizes(n_selected, n_pool, n_centres, extra_token: str) -> tuple[int, int]:
    """(M, K) of :func:`merge_into_centres` when a row keeps ``n_selected`` tokens and picks ``n_centres`` centres
    (at most the pool) among ``n_pool``: the most centres, and the most output slots with the extra token. Host
    ints (every row alike), or numpy arrays of one count per row."""
    centres = np.minimum(n_centres, n_pool) if isinstance(n_centres, np.ndarray) else min(n_centres, n_pool)
    extra = n_pool > centres if extra_token == "if_absorbed" else centres > 0
    slots = n_selected + centres + extra
    if isinstance(slots, np.ndarray):  # one count per row: the largest (none in an empty batch)
        return (int(centres.max()), int(slots.max())) if slots.size else (0, 0)
    return centres, int(slots)


def uniform_mask(available: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """[B, N] bool: ``count[b]`` (or ``count``, one int for all rows) tokens at an even stride through the
    available tokens of row b."""
    m = available.sum(1, keepdim=True)  # [B, 1]
    rank = available.cumsum(1) - 1  # [B, N] rank among the available tokens
    count = m.clamp(max=count) if isinstance(count, int) else torch.minimum(count[:, None], m)  # [B, 1]
    # step index floor(rank * count / m) runs 0 .. count-1; take the first token of each step: the step index
    # rises at rank r exactly when (r * count) mod m < count (count <= m)
    return available & ((rank * count).remainder(m.clamp(min=1)) < count)
