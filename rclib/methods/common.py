"""Pieces the methods share: laying selected tokens out in output slots, and the KNN merge.

Every method ends the same way: some input tokens go to output slots unchanged, some output slots are
weighted sums of input tokens. Methods describe that as *entries* (output row, input column, weight)
and :func:`assemble` turns them into a :class:`~rclib.result.CompressionResult`, so provenance is
built once, the same way, for all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

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
    index first); default all None. Returns, per group, [B, N] long positions (-1 where not selected),
    and [B] the total number of slots used.
    """
    orders = orders or [None] * len(groups)
    offset = torch.zeros(groups[0].shape[0], dtype=torch.long, device=groups[0].device)
    positions = []
    for g, order in zip(groups, orders, strict=True):
        rank = g.long().cumsum(1) - 1 if order is None else descending_rank(order, g)  # [B, N] within the group
        positions.append(torch.where(g, offset[:, None] + rank, -1))
        offset = offset + g.sum(1)
    return positions, offset


def identity_entries(position: torch.Tensor) -> Entries:
    """Token n goes unchanged (weight 1) to slot ``position[b, n]`` (-1: nowhere)."""
    col = torch.arange(position.shape[1], device=position.device).expand_as(position)
    return Entries(position, col, torch.ones_like(position, dtype=torch.float32))


def assemble(inputs: torch.Tensor, entries: Entries, slot_rows: torch.Tensor, slot_kinds: torch.Tensor,
             n_slots: torch.Tensor, fate: torch.Tensor, method: str,
             scores: dict[str, torch.Tensor], K: int | None = None) -> CompressionResult:
    """Scatter weight entries into a [B, K, N] matrix and apply it to ``inputs`` [B, N, C].

    slot_rows / slot_kinds [B, S]: the Slot kind of output row ``slot_rows[b, s]`` (-1: ignore).
    n_slots [B]: slots used per sample. K: their maximum when the caller knows it on the host (a fixed
    budget); None reads it from n_slots (the one host sync, for the output shape).
    """
    B, N, _ = inputs.shape
    if K is None or not B:  # an empty batch has no slots
        K = int(n_slots.max()) if B else 0
    # rows of -1 wrap around to row K, an extra row cut off below
    weights = torch.zeros(B, (K + 1) * N, dtype=torch.float32, device=inputs.device)
    weights.scatter_add_(1, entries.row.remainder(K + 1) * N + entries.col, entries.value.float())
    weights = weights.view(B, K + 1, N)[:, :K]  # [B, K, N]

    slot = torch.full((B, K + 1), int(Slot.PAD), dtype=torch.long, device=inputs.device)
    slot.scatter_(1, slot_rows.remainder(K + 1), slot_kinds)
    return from_weights(inputs, weights, slot[:, :K], fate, method, scores)


def most_true(mask: torch.Tensor, known: int | None = None) -> int:
    """The most True values in a row of ``mask`` [B, N]: ``known`` when the caller has it on the host, else
    counted on the device and read (a host sync); 0 for an empty batch."""
    if not mask.shape[0]:
        return 0
    return known if known is not None else int(mask.sum(1).max())


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
    False ones; valid [B, M] bool: which are True."""
    index = mask.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :M]
    return index, mask.gather(1, index)


def centre_rows(centres: torch.Tensor, M: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The centres of each row in original order, padded to the batch's largest count M.

    centres [B, N] bool -> index [B, M] long (padding points at non-centres), valid [B, M] bool. M: known on
    the host (a fixed budget), or None to read it (one sync), so that the similarity holds the centres' rows only.
    """
    return true_first(centres, most_true(centres, M))


def knn_merge_entries(centre_index: torch.Tensor, centre_valid: torch.Tensor, pool: torch.Tensor,
                      similarity: torch.Tensor, centre_position: torch.Tensor, weight: torch.Tensor,
                      k: int) -> Entries:
    """Each centre absorbs its ``k`` most similar other tokens of ``pool``, weighted by ``weight``.

    centre_index, centre_valid [B, M]: the centres (see :func:`centre_rows`); pool [B, N] bool (centres
    within it); similarity [B, M, N] (row: centre, column: candidate); centre_position [B, N] each
    token's output slot; weight [B, N] (CLS attention, not normalised). The centre itself enters with
    weight 1: merged = x_i + sum_j w_j x_j.
    """
    B, M = centre_index.shape
    N = pool.shape[1]
    allowed = pool[:, None, :].expand(B, M, N).clone()  # [B, M, N] candidates: the pool's tokens ...
    allowed.scatter_(2, centre_index[:, :, None], False)  # ... but the centre itself
    k = min(k, N - 1)
    best, nbr = similarity.masked_fill(~allowed, float("-inf")).topk(k, dim=2)  # [B, M, k]
    is_nbr = torch.isfinite(best) & centre_valid[:, :, None]  # fewer than k candidates: -inf slots skipped
    slot = centre_position.gather(1, centre_index)[:, :, None].expand(B, M, k)
    row = torch.where(is_nbr, slot, torch.full_like(nbr, -1))
    return Entries(row.flatten(1), nbr.flatten(1), weight.gather(1, nbr.flatten(1)))


def extra_entries(sources: torch.Tensor, position: torch.Tensor, weight: torch.Tensor) -> Entries:
    """One extra token: sum over ``sources`` [B, N] of weight_j x_j, placed at ``position`` [B]."""
    col = torch.arange(sources.shape[1], device=sources.device).expand_as(sources)
    row = torch.where(sources, position[:, None].expand_as(sources), torch.full_like(col, -1))
    return Entries(row, col, weight)


def cosine_matrix(keys: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """[B, R, N] cosine similarity between the keys [B, N, Ck] of the tokens ``rows`` [B, R] (default:
    all, R = N) and the keys of all tokens.

    The dot products are divided by the norms afterwards: no normalised copy of the keys is made.
    """
    keys = keys.float()
    norms = keys.norm(dim=-1).clamp(min=1e-12)  # [B, N], clamped as torch.nn.functional.normalize does
    if rows is None:
        picked, picked_norms = keys, norms
    else:
        picked, picked_norms = keys.gather(1, rows[:, :, None].expand(-1, -1, keys.shape[-1])), norms.gather(1, rows)
    return torch.bmm(picked, keys.transpose(1, 2)) / picked_norms[:, :, None] / norms[:, None, :]


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

    kept, recovered, centres, pool: [B, N] bool (centres within pool, pool disjoint from kept and
    recovered). Each centre absorbs the ``k`` other tokens j of the pool with the highest
    cos(key_i, key_j) + text_bias_j (keys [B, N, Ck]; text_bias [B, N] or None); the pool's non-centre
    tokens also form one extra token. ``weight`` [B, N] is the CLS attention.
    centre_order: None puts the centres in original order; [B, N] scores put them in descending score
    order (what ``topk`` returns). extra_token: "if_absorbed" emits the extra token when some pool token
    is not a centre; "if_centres" when some centre was chosen (then it is a zero token if every pool
    token is a centre, and without centres the pool's tokens are dropped). sizes: (M, K), the most centres
    and output slots of a row, when the caller knows them on the host (:func:`merge_sizes`); None reads them
    from the device (two host syncs).
    """
    assert extra_token in EXTRA_TOKEN_RULES, f"extra_token must be one of {EXTRA_TOKEN_RULES}, got {extra_token!r}"
    absorbed = pool & ~centres
    centre_index, centre_valid = centre_rows(centres, None if sizes is None else sizes[0])
    similarity = cosine_matrix(keys, centre_index)  # [B, M, N]: the centres' rows only
    if text_bias is not None:
        similarity = similarity + text_bias[:, None, :]
    (selected_pos, centre_pos), n_slots = slot_positions([kept | recovered, centres], [None, centre_order])
    has_extra = (absorbed if extra_token == "if_absorbed" else centres).any(1)  # [B]
    extra_pos = torch.where(has_extra, n_slots, -1)
    n_slots = n_slots + has_extra.long()
    entries = Entries.cat([
        identity_entries(torch.where(centres, centre_pos, selected_pos)),
        knn_merge_entries(centre_index, centre_valid, pool, similarity, centre_pos, weight, k),
        extra_entries(absorbed, extra_pos, weight),
    ])
    kind = torch.where(recovered, int(Slot.RECOVERED), int(Slot.KEPT))
    kind = torch.where(centres, int(Slot.CENTRE), kind)
    slot_rows = torch.cat([torch.where(centres, centre_pos, selected_pos), extra_pos[:, None]], 1)
    slot_kinds = torch.cat([kind, torch.full_like(extra_pos[:, None], int(Slot.EXTRA))], 1)

    merged = absorbed & has_extra[:, None]  # without an extra token (and so without centres) the pool is dropped
    fate = torch.full_like(kind, int(Fate.DROPPED))
    for mask, f in ((merged, Fate.MERGED), (kept, Fate.KEPT), (recovered, Fate.RECOVERED), (centres, Fate.CENTRE)):
        fate = torch.where(mask, int(f), fate)
    return assemble(tokens, entries, slot_rows, slot_kinds, n_slots, fate, method, scores,
                    K=None if sizes is None else sizes[1])


def merge_sizes(n_selected: int, n_pool: int, n_centres: int, extra_token: str) -> tuple[int, int]:
    """(M, K) of :func:`merge_into_centres` when every row keeps ``n_selected`` tokens and picks ``n_centres``
    centres (at most the pool) among ``n_pool``: the centres, and the output slots with the extra token."""
    centres = min(n_centres, n_pool)
    extra = n_pool > centres if extra_token == "if_absorbed" else centres > 0
    return centres, n_selected + centres + int(extra)


def uniform_mask(available: torch.Tensor, count: torch.Tensor | int) -> torch.Tensor:
    """[B, N] bool: ``count[b]`` (or ``count``, one int for all rows) tokens at an even stride through the
    available tokens of row b."""
    m = available.sum(1)  # [B]
    rank = available.long().cumsum(1) - 1  # [B, N] rank among the available tokens
    count = m.clamp(max=count) if isinstance(count, int) else torch.minimum(count, m)
    # step index floor(rank * count / m) runs 0 .. count-1; take the first token of each step
    m = m.clamp(min=1)[:, None]
    step = (rank * count[:, None]) // m
    previous_step = ((rank - 1) * count[:, None]) // m
    return available & (step > previous_step)
