"""CLIP text towers behind one interface: text embeddings, and patch tokens mapped into the same space.

The text score of Recoverable Compression is the cosine between the question's CLIP text embedding
and each final-layer vision patch token put through CLIP's visual head. Two implementations: a
transformers ``CLIPModel`` and an open_clip ``CLIP``; both give L2-normalised ``[B, D]`` text
embeddings and ``[B, N, D]`` patch projections. Both are differentiable (ShapesWorld trains its CLIP through
them); inference callers run them under ``torch.no_grad``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

# The first line of LLaVA-1.5's vicuna_v1 prompt: what the released code embeds for every sample.
SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@dataclass(frozen=True)
class TextOptions:
    """How the text score is computed. The defaults follow the paper; :meth:`released` the authors' code."""

    text_source: str = "question"  # "question"; "system_prompt": released code, the constant SYSTEM_PROMPT
    text_pooling: str = "eos"  # "eos": standard CLIP; "last": released, last slot of a row padded to 77, no mask
    post_layernorm: bool = True  # patch tokens through the vision post-layernorm first (released code: False)

    def __post_init__(self):
        assert self.text_source in ("question", "system_prompt"), \
            f"text_source must be 'question' or 'system_prompt', got {self.text_source!r}"
        assert self.text_pooling in ("eos", "last"), f"text_pooling must be 'eos' or 'last', got {self.text_pooling!r}"

    @classmethod
    def released(cls) -> TextOptions:
        """The released code's text score (see method.md, stage 0)."""
        return cls(text_source="system_prompt", text_pooling="last", post_layernorm=False)

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def texts(self, questions: list[str]) -> list[str]:
        """The strings to embed for a batch of questions."""
        return list(questions) if self.text_source == "question" else [SYSTEM_PROMPT] * len(questions)


class TextTower(nn.Module, ABC):
    """A CLIP's text tower with its projection, plus the visual head (post-layernorm, projection)."""

    context_length: int  # tokens the text tower reads (77 for OpenAI CLIP); longer texts are truncated

    @abstractmethod
    def text_hidden(self, texts: list[str], pad_to_context: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-layer-normed text tokens [B, L, W] and the position of each row's EOS token [B].

        pad_to_context: pad every row to ``context_length`` and use no attention mask (released code).
        """

    @abstractmethod
    def project_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """[B, W] pooled text tokens -> [B, D] joint space."""

    @abstractmethod
    def vision_post_layernorm(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, N, C] the vision tower's final LayerNorm."""

    @abstractmethod
    def project_vision(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, C] -> [B, N, D] the visual projection into the joint space."""

    @property
    @abstractmethod
    def vision_width(self) -> int:
        """C, the width of the vision tokens the visual head takes."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_text(self, texts: list[str], pooling: str = "eos") -> torch.Tensor:
        """L2-normalised text embeddings [B, D] (float32), pooled at EOS or (released) at the last slot."""
        hidden, eos = self.text_hidden(list(texts), pad_to_context=pooling == "last")  # [B, L, W], [B]
        position = eos if pooling == "eos" else torch.full_like(eos, hidden.shape[1] - 1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), position]  # [B, W]
        return F.normalize(self.project_text(pooled).float(), dim=-1)

    def project_patches(self, last_hidden_state: torch.Tensor, post_layernorm: bool = True) -> torch.Tensor:
        """Final vision tokens [B, 1 + N, C] (CLS first) -> patch tokens in the joint space [B, N, D]."""
        patches = last_hidden_state[:, 1:].to(self.device)  # drop CLS: [B, N, C]
        if post_layernorm:
            patches = self.vision_post_layernorm(patches)
        return self.project_vision(patches)


def text_similarity(text_embeds: torch.Tensor, patch_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine [B, N] between text embeddings [B, D] and patch embeddings [B, N, D], in float32."""
    text = F.normalize(text_embeds.float(), dim=-1)
    return torch.einsum("bd,bnd->bn", text, F.normalize(patch_embeds.float(), dim=-1))


class TransformersTextTower(TextTower):
    """The text side of a transformers ``CLIPModel``; of its vision side only the head is kept."""

    def __init__(self, clip, tokenizer):
        super().__init__()
        self.text_model = clip.text_model
        self.text_projection = clip.text_projection
        self.post_layernorm = clip.vision_model.post_layernorm
        self.visual_projection = clip.visual_projection
        self.tokenizer = tokenizer
        self.context_length = clip.config.text_config.max_position_embeddings

    def text_hidden(self, texts, pad_to_context):
        batch = self.tokenizer(texts, padding="max_length" if pad_to_context else True, truncation=True,
                               max_length=self.context_length, padding_side="right", return_tensors="pt")
        mask = batch["attention_mask"].to(self.device)
        hidden = self.text_model(input_ids=batch["input_ids"].to(self.device),
                                 attention_mask=None if pad_to_context else mask).last_hidden_state
        return hidden, mask.sum(1) - 1  # the tokenizer ends every row with EOS, kept by truncation

    def project_text(self, pooled):
        return self.text_projection(pooled)

    def vision_post_layernorm(self, tokens):
        return self.post_layernorm(tokens)

    def project_vision(self, tokens):
        return self.visual_projection(tokens)

    @property
    def vision_width(self):
        return self.visual_projection.in_features


class OpenClipTextTower(TextTower):
    """An open_clip ``CLIP`` (text transformer in the model, visual head in ``model.visual``)."""

    def __init__(self, model, tokenizer):
        super().__init__()
        assert model.text_pool_type == "argmax", \
            f"only OpenAI-style open_clip text towers (EOS pooled by argmax) supported, got {model.text_pool_type!r}"
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = model.context_length

    def text_hidden(self, texts, pad_to_context):
        ids = self.tokenizer(texts, context_length=self.context_length).to(self.device)  # [B, L], always padded
        x = self.model.token_embedding(ids) + self.model.positional_embedding  # [B, L, W]
        x = self.model.ln_final(self.model.transformer(x, attn_mask=self.model.attn_mask))
        return x, ids.argmax(-1)  # EOS has the largest id in open_clip's vocabulary

    def project_text(self, pooled):
        projection = self.model.text_projection  # an nn.Linear in some configs, a [W, D] matrix in OpenAI's
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection

    def vision_post_layernorm(self, tokens):
        return self.model.visual.ln_post(tokens)

    def project_vision(self, tokens):
        return tokens @ self.model.visual.proj

    @property
    def vision_width(self):
        return self.model.visual.proj.shape[0]
