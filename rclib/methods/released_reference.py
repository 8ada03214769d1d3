"""The authors' released RC code, restated in torch for comparison: not a method of rclib.

:func:`released_compress` computes what ``CLIPVisionTower.token_recycling_with_text_in_vision_and_clustring``
(github banjiuyufen/Recoverable-Compression, commit d927594, llava/model/multimodal_encoder/clip_encoder.py
lines 309-432) computes after its vision forwards, the way it computes it: the whole attention map,
each filter's count by scikit-learn's ``LocalOutlierFactor`` on the host (``find_max_derivative_position``,
lines 36-46), a Python loop over the centres. ``rclib speed`` times it against rclib's ``preset="released"``
(the released way of doing RC's work), and the tests check that both give the same tokens; its LOF count is
also the speed benchmark's scikit-learn side of the filter agreement. Needs scikit-learn.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F


def sklearn_lof_count(scores: np.ndarray, n_neighbors: int) -> int:
    """Outliers scikit-learn's LocalOutlierFactor(contamination='auto') finds among 1-D scores [n]."""
    from sklearn.neighbors import LocalOutlierFactor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns and clamps when n_neighbors >= n
        labels = LocalOutlierFactor(n_neighbors=n_neighbors, contamination="auto").fit_predict(scores.reshape(-1, 1))
    return int((labels == -1).sum())


def released_lof_ratio(scores: torch.Tensor, n_neighbors: int) -> float:
    """The released code's filter: the scores [1, n] to the host as float32, the share of LOF outliers."""
    x = scores.float().cpu().numpy().reshape(-1)
    return sklearn_lof_count(x, n_neighbors) / len(x)


def complement(index: torch.Tensor, n: int) -> torch.Tensor:
    """[1, n - len] the ascending positions of 0..n-1 not in ``index`` [1, len]."""
    missing = torch.ones(n, dtype=torch.bool, device=index.device)
    missing[index[0]] = False
    return torch.nonzero(missing).flatten()[None]


@torch.no_grad()
def released_compress(queries: torch.Tensor, keys: torch.Tensor, features: torch.Tensor,
                      patch_embeds: torch.Tensor, text_embed: torch.Tensor, knn_k: int = 32) -> torch.Tensor:
    """RC as the authors' released code computes it after its vision forwards, for one image.

    queries, keys [1, 1 + N, C]: the last vision layer's q_proj / k_proj outputs (CLS first);
    features [1, N, C]: the LLaVA feature layer's patches; patch_embeds [1, N, D]: the final patch
    tokens through the visual projection (their second forward); text_embed [1, D].
    Returns the output tokens [1, K, C]: kept and recovered (original order), the merged centres
    (descending [CLS] attention), the extra token. Its way: the whole attention map, each filter's
    count by scikit-learn on the host, a Python loop over the centres, the width-based centre count
    and the keys read from the full grid (see rclib's ``RCConfig`` released switches).
    """
    _, N, C = features.shape
    attention = torch.softmax(queries @ keys.transpose(1, 2) * C ** -0.5, dim=-1)  # [1, 1 + N, 1 + N]
    cls_attn = attention[:, 0, 1:]  # [1, N]
    text = F.normalize(text_embed, dim=-1)[:, None]  # [1, 1, D]
    score = (text @ F.normalize(patch_embeds, dim=-1).transpose(1, 2))[:, 0] * patch_embeds.shape[-1] ** -0.5

    visual = cls_attn.topk(int(N * released_lof_ratio(cls_attn, 20)), dim=1).indices  # [1, n_v]
    score[:, visual[0]] = score.min(-1).values
    textual = score.topk(int((N - visual.shape[1]) * released_lof_ratio(score, 20)), dim=1).indices
    selected = torch.cat([visual, textual], 1).sort(1).values  # [1, n_v + n_t]
    kept = features.gather(1, selected[..., None].expand(-1, -1, C))

    rest = complement(selected, N)  # [1, M]
    rest_x = features.gather(1, rest[..., None].expand(-1, -1, C))  # [1, M, C]
    rest_attn, rest_score = cls_attn.gather(1, rest), 50 * score.gather(1, rest)
    n_centres = int(C * released_lof_ratio(rest_attn, 10))  # the feature width, not M
    centre = rest_attn.topk(n_centres, dim=1).indices  # [1, n_c] positions within the rest
    others = complement(centre, rest.shape[1])  # [1, M - n_c]
    grid_keys = keys[:, 1:]  # positions within the rest read from the full grid, as released
    centre_key = F.normalize(grid_keys.gather(1, centre[..., None].expand(-1, -1, C)), dim=-1)[0]
    other_key = F.normalize(grid_keys.gather(1, others[..., None].expand(-1, -1, C)), dim=-1)[0]
    centre_x, other_x = rest_x[0, centre[0]], rest_x[0, others[0]]
    centre_attn, other_attn = rest_attn[0, centre[0]], rest_attn[0, others[0]]
    centre_score, other_score = rest_score[0, centre[0]], rest_score[0, others[0]]
    merged = torch.zeros_like(centre_x)
    for i in range(n_centres):  # every other centre and every non-centre is a candidate
        candidates_key = torch.cat([centre_key[:i], centre_key[i + 1:], other_key])
        candidates_x = torch.cat([centre_x[:i], centre_x[i + 1:], other_x])
        candidates_attn = torch.cat([centre_attn[:i], centre_attn[i + 1:], other_attn])
        candidates_score = torch.cat([centre_score[:i], centre_score[i + 1:], other_score])
        nearest = (candidates_key @ centre_key[i] + candidates_score).topk(knn_k).indices
        merged[i] = centre_x[i] + (candidates_x[nearest] * candidates_attn[nearest, None]).sum(0)
    extra = (other_x * other_attn[:, None]).sum(0, keepdim=True)  # [1, C]
    merged = torch.cat([merged, extra]) if n_centres else merged[:0]  # no centre: the extra token goes too
    return torch.cat([kept, merged[None]], 1)
