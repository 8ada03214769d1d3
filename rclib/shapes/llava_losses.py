"""What stage 3 computes on a batch of conversations: the LM's forward pass with the inputs of chosen layers'
attention caught (`lm_forward`), and the auxiliary losses on them that spell out each answer's hops: attention
targets (`grounding_losses`) and a logit lens on the value path (`lens_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rclib.models.families.llava import splice_image_tokens
from rclib.models.llm_pruning import attention_rows
from rclib.shapes.data import OBJECT_WORDS, PAIR_SIDES, image_lengths, shorten
from rclib.shapes.recipe import TrainConfig
from rclib.shapes.world import LETTERS, NUM_PATCHES


def lm_forward(llava, conv, features: torch.Tensor, caught_layers: tuple[int, ...] = (), weights: torch.Tensor | None = None):
    """Next-token logits (B, 2T, V) at the answer positions, per layer in `caught_layers` what its attention read
    (attention module, its input hidden states, its position embeddings), and the conversations as the LM read
    them. features (B, P, C); weights (B, K, P) shortens each row's image to weights @ features (`shorten`), None
    keeps every patch."""
    original, n_output = conv, torch.full((len(features),), NUM_PATCHES)
    if weights is not None:
        features, conv, n_output = weights @ features, shorten(conv, weights), image_lengths(weights)
    embeds, mask = splice_image_tokens(llava, original.ids, original.attention_mask, features, n_output, NUM_PATCHES)
    assert torch.equal(mask, conv.attention_mask), "conversations are laid out left-padded around one image run"
    language_model = llava.model.language_model
    caught = {layer: {} for layer in caught_layers}
    hooks = [language_model.layers[layer].self_attn.register_forward_pre_hook(
        lambda module, args, kwargs, into=into: into.update(kwargs), with_kwargs=True) for layer, into in caught.items()]
    try:
        hidden = language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=conv.position_ids).last_hidden_state
    finally:
        for hook in hooks:
            hook.remove()
    picked = hidden.gather(1, conv.target_pos[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, 2T, D)
    reads = {layer: (language_model.layers[layer].self_attn, kw["hidden_states"], kw["position_embeddings"])
             for layer, kw in caught.items()}
    return llava.lm_head(picked), reads, conv


def grounding_loss(attention: torch.Tensor, image_start: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """-log of the attention mass (B, Q, L) that each valid query (B, Q) puts on its image tokens masks (B, Q, K);
    a query whose mask is empty (its object cut from a shortened image) has no target."""
    B, Q, L = attention.shape
    K = masks.shape[-1]
    image_pos = (image_start[:, None, None] + torch.arange(K)).clamp(max=L - 1).expand(B, Q, K)  # past K_b: masked out
    mass = (attention.gather(2, image_pos) * masks).sum(-1)  # (B, Q)
    valid = valid & masks.any(-1)
    return -(mass[valid] + 1e-6).log().mean() if valid.any() else attention.new_zeros(())


def onto_position_loss(attention: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
    """-log of the attention (B, Q, L) each query puts on its target position (B, Q), over those >= 0."""
    valid = target_pos >= 0
    picked = attention.gather(2, target_pos.clamp(min=0)[..., None]).squeeze(-1)
    return -(picked[valid] + 1e-6).log().mean() if valid.any() else attention.new_zeros(())


def grounding_losses(reads: dict, conv, cfg: TrainConfig) -> torch.Tensor:
    """Attention targets, each one hop of the answer (-log of the attention mass on the target):
    word layer: head 0 at each name's last word onto every object sharing that word, head 1 onto the
    name's first word, head 2 at each option word of a choice question onto its letter;
    grounding layer: head 0 at the last word onto the named object, head 1 onto its digit patches;
    answer layer: head k at each answer position onto the k-th name's last word, head 2 onto a position
    question's relation word; option layer: head 0 at the answer position onto a choice question's option
    word that names the object's colour, head 1 at a position question's answer position onto its relation
    word when the relation holds and onto itself when not (the verdict: the side-of lens has put the first
    object's side there, and a query carrying "left" meets the key of the word "left", so the yes / no
    becomes a match of two words instead of a mapping the MLPs must find)."""
    query = conv.name_pos.flatten(1)  # (B, Q)
    valid = query >= 0

    def attention(layer: int, head: int, at: torch.Tensor) -> torch.Tensor:
        """One head's attention weights (B, Q, L) from positions at (B, Q), as `layer` computes them."""
        module, normed, rotary = reads[layer]  # normed (B, L, D): the layer's attention input
        return attention_rows(module, normed, rotary, at, conv.attention_mask.bool(), head=head)

    word_objects = grounding_loss(attention(cfg.word_layer, 0, query), conv.image_start, conv.coarse.flatten(1, 2), valid)
    first_word = onto_position_loss(attention(cfg.word_layer, 1, query), conv.previous_pos.flatten(1))
    options = conv.option_pos.flatten(1)  # (B, T * letters)
    option_letter = onto_position_loss(attention(cfg.word_layer, 2, options), conv.letter_pos.flatten(1))
    named_object = grounding_loss(attention(cfg.grounding_layer, 0, query), conv.image_start, conv.named.flatten(1, 2), valid)
    glyph = conv.glyph.flatten(1, 2)  # (B, Q, P)
    digit = grounding_loss(attention(cfg.grounding_layer, 1, query), conv.image_start, glyph, valid & glyph.any(-1))
    answer_pos = conv.target_pos[:, 0::2]  # (B, T) positions that predict each answer
    to_names = sum(onto_position_loss(attention(cfg.answer_layer, k, answer_pos), conv.name_pos[..., k])
                   for k in range(conv.name_pos.shape[-1]))
    relation = onto_position_loss(attention(cfg.answer_layer, 2, answer_pos), conv.relation_pos)
    chosen = onto_position_loss(attention(cfg.option_layer, 0, answer_pos), conv.chosen_pos)
    verdict = onto_position_loss(attention(cfg.option_layer, 1, answer_pos), conv.verdict_pos)
    return word_objects + first_word + option_letter + named_object + digit + to_names + relation + chosen + verdict


def lens_loss(llava, reads: dict, conv, cfg: TrainConfig, word_ids) -> torch.Tensor:
    """Logit lens on the value path, each term a cross-entropy of lm_head over a few words, on the hidden
    state entering the layer after the one named:
    grounding layer, at each name's last word: that object's colour, shape and digit, and the half of the image
    it lies in along x ("left" / "right") and y ("above" / "below"), so the name carries where the object is;
    answer layer, at each answer position: the first named object's colour, shape and digit, and, when two
    objects are named, the first one's side of the second along x ("left" / "right") and y ("above" / "below");
    word layer, at each option word of a choice question: its letter.
    word_ids(words: tuple) -> their token ids."""
    def hidden_at(layer: int, at: torch.Tensor) -> torch.Tensor:
        hidden = reads[layer + 1][1]  # (B, L, D) after `layer`, normalised as the next layer reads it
        return hidden.gather(1, at.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, Q, D)

    def term(picked: torch.Tensor, valid: torch.Tensor, words, target: torch.Tensor) -> torch.Tensor:
        valid = valid & (target >= 0)
        if not valid.any():
            return picked.new_zeros(())
        return F.cross_entropy(llava.lm_head(picked[valid])[:, word_ids(words)], target[valid])

    names, answers, options = conv.name_pos.flatten(1), conv.target_pos[:, 0::2], conv.option_pos.flatten(1)
    at_names, at_answers = hidden_at(cfg.grounding_layer, names), hidden_at(cfg.answer_layer, answers)
    loss = conv.name_pos.new_zeros((), dtype=torch.float)
    for kind, words in enumerate(OBJECT_WORDS.values()):
        loss = loss + term(at_names, names >= 0, words, conv.object_words.flatten(1, 2)[..., kind])
        loss = loss + term(at_answers, answers >= 0, words, conv.object_words[:, :, 0, kind])
    for axis, sides in enumerate(PAIR_SIDES):
        loss = loss + term(at_names, names >= 0, sides, conv.name_halves.flatten(1, 2)[..., axis])
        loss = loss + term(at_answers, answers >= 0, sides, conv.pair_sides[..., axis])
    letters = torch.arange(len(LETTERS)).repeat(conv.option_pos.shape[1])  # option k's letter is LETTERS[k]
    return loss + term(hidden_at(cfg.word_layer, options), options >= 0, LETTERS, letters.expand_as(options))
