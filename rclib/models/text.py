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

# LLaVA-1.5's vicuna_v1 system prompt: the first line of every evaluation prompt.
SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
RELEASED_BOS = "<s>"  # Vicuna's BOS as its LLaMA tokenizer decodes it; the released code embeds it with the text
TEXT_SOURCES = ("question", "prompt_first_line")
TEXT_POOLINGS = ("eos", "last")
# CLIPTextEncoder.forward: the prompt's first line, max_length=args.max_length (20, PretrainedConfig's default),
# padded to it, no attention mask, position -1; patches projected without post-layernorm
RELEASED_TEXT = {"text_source": "prompt_first_line", "text_pooling": "last", "text_max_length": 20,
                 "post_layernorm": False}


def prompt_first_line(prompt: str, image_token: str) -> str:
    """What the released code embeds: the LLM prompt without its image token, decoded by Vicuna's
    tokenizer (so led by "<s>"), cut at the first newline. vicuna_v1: "<s> A chat ... questions. USER:"."""
    first_line = prompt.replace(image_token, "").split("\n")[0].strip()
    return f"{RELEASED_BOS} {first_line}"


@dataclass(frozen=True)
class TextOptions:
    """How the text score is computed. The defaults follow the paper; ``preset("released")`` the authors' code."""

    text_source: str = "question"  # "prompt_first_line": released, see prompt_first_line (constant under vicuna_v1)
    text_pooling: str = "eos"  # "eos": standard CLIP; "last": released, last slot of the padded row, no mask
    text_max_length: int | None = None  # CLIP tokens per text (BOS, EOS included); None: the tower's 77; released 20
    post_layernorm: bool = True  # patch tokens through the vision post-layernorm first (released code: False)

    def __post_init__(self):
        if self.text_source not in TEXT_SOURCES:
            raise ValueError(f"text_source must be one of {TEXT_SOURCES}, got {self.text_source!r}")
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_pooling must be one of {TEXT_POOLINGS}, got {self.text_pooling!r}")
        if self.text_max_length is not None and int(self.text_max_length) < 2:
            raise ValueError(f"text_max_length must be >= 2 (BOS and EOS) or None, got {self.text_max_length}")

    @classmethod
    def preset(cls, name: str | None = None, **options) -> TextOptions:
        """None or "paper": the defaults; "released": the released code's text score (docs/released.md).

        Options given alongside override the preset's.
        """
        presets = {None: {}, "paper": {}, "released": RELEASED_TEXT}
        if name not in presets:
            raise ValueError(f"unknown text preset {name!r}; use 'paper' or 'released'")
        unknown = sorted(options.keys() - cls.names())
        if unknown:
            raise ValueError(f"unknown text option(s) {unknown}; the text options are {sorted(cls.names())}")
        return cls(**{**presets[name], **options})

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def texts(self, questions: list[str], prompts: list[str], image_token: str) -> list[str]:
        """The strings to embed for a batch of questions and their LLM prompts."""
        if self.text_source == "question":
            return list(questions)
        return [prompt_first_line(prompt, image_token) for prompt in prompts]


class TextTower(nn.Module, ABC):
    """A CLIP's text tower with its projection, plus the visual head (post-layernorm, projection)."""

    context_length: int  # tokens the text tower reads (77 for OpenAI CLIP); longer texts are truncated
    kind = "clip"  # the contrastive model it comes from: "clip" or "siglip"; a family names the one it pairs with

    @abstractmethod
    def text_hidden(self, texts: list[str], max_length: int, pad_to_max: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Final-layer-normed text tokens [B, L, W] and the position of each row's EOS token [B].

        Texts are truncated to ``max_length`` tokens (BOS and EOS included); pad_to_max: pad every row to
        ``max_length`` and use no attention mask (released code), else pad to the longest row and mask.
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
    @abstractmethod
    def projection_dim(self) -> int:
        """D, the width of the joint space (768 for CLIP ViT-L/14)."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_text(self, texts: list[str], pooling: str = "eos", max_length: int | None = None) -> torch.Tensor:
        """L2-normalised text embeddings [B, D] (float32), pooled at EOS or (released) at the last slot.

        max_length: CLIP tokens per text, BOS and EOS included (None: the whole context, 77); with
        "last" pooling every row is padded to it and read without an attention mask.
        """
        max_length = self.context_length if max_length is None else max_length
        if not 2 <= max_length <= self.context_length:
            raise ValueError(f"max_length must be between 2 and the text tower's context of {self.context_length} "
                             f"tokens, got {max_length}")
        hidden, eos = self.text_hidden(list(texts), max_length, pad_to_max=pooling == "last")  # [B, L, W], [B]
        position = eos if pooling == "eos" else torch.full_like(eos, hidden.shape[1] - 1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), position]  # [B, W]
        return F.normalize(self.project_text(pooled).float(), dim=-1)

    def project_patches(self, last_hidden_state: torch.Tensor, post_layernorm: bool = True) -> torch.Tensor:
        """Final vision tokens [B, 1 + N, C] (CLS first) -> patch tokens in the joint space [B, N, D]."""
        return self.project_tokens(last_hidden_state[:, 1:], post_layernorm)  # drop CLS: [B, N, C]

    def project_tokens(self, patches: torch.Tensor, post_layernorm: bool = True) -> torch.Tensor:
        """Final vision patch tokens [B, N, C] (no CLS) -> the joint space [B, N, D]."""
        patches = patches.to(self.device)
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

    def text_hidden(self, texts, max_length, pad_to_max):
        batch = self.tokenizer(texts, padding="max_length" if pad_to_max else True, truncation=True,
                               max_length=max_length, padding_side="right", return_tensors="pt")
        mask = batch["attention_mask"].to(self.device)
        hidden = self.text_model(input_ids=batch["input_ids"].to(self.device),
                                 attention_mask=None if pad_to_max else mask).last_hidden_state
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

    @property
    def projection_dim(self):
        return self.text_projection.out_features


class OpenClipTextTower(TextTower):
    """An open_clip ``CLIP`` (text transformer in the model, visual head in ``model.visual``)."""

    def __init__(self, model, tokenizer):
        super().__init__()
        if model.text_pool_type != "argmax":
            raise ValueError("only OpenAI-style open_clip text towers (EOS pooled by argmax) are supported, got "
                             f"text_pool_type={model.text_pool_type!r}; pass a transformers CLIPModel instead")
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = model.context_length

    def text_hidden(self, texts, max_length, pad_to_max):
        ids = self.tokenizer(texts, context_length=max_length).to(self.device)  # [B, L], always padded to L
        x = self.model.token_embedding(ids) + self.model.positional_embedding[:max_length]  # [B, L, W]
        causal = self.model.attn_mask[:max_length, :max_length]
        x = self.model.ln_final(self.model.transformer(x, attn_mask=causal))
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

    @property
    def projection_dim(self):
        projection = self.model.text_projection
        return projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]


class SiglipTextTower(TextTower):
    """The text side of a transformers ``SiglipModel``, and its vision head applied to each patch.

    SigLIP pools its text at the last position of a text padded to its full length (as it was trained) and
    its image with an attention-pooling head, not a per-token projection. A patch enters the joint space
    through that head as if the pooling query attended to it alone: the head's value and output
    projections, then its residual MLP.
    """

    kind = "siglip"

    def __init__(self, siglip, tokenizer):
        super().__init__()
        if siglip.vision_model.head is None:
            raise ValueError("this SigLIP has no vision head (vision_use_head=False), so its patches have no place "
                             "in the joint space: pass the full SigLIP checkpoint (e.g. google/siglip-so400m-patch14-384)")
        self.text_model = siglip.text_model
        self.post_layernorm = siglip.vision_model.post_layernorm
        self.head = siglip.vision_model.head
        self.tokenizer = tokenizer
        self.context_length = siglip.config.text_config.max_position_embeddings

    def text_hidden(self, texts, max_length, pad_to_max):
        batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=max_length,
                               return_tensors="pt")
        hidden = self.text_model(input_ids=batch["input_ids"].to(self.device)).last_hidden_state  # [B, L, W]
        return hidden, torch.full((len(texts),), hidden.shape[1] - 1, device=hidden.device)  # pooled at the end

    def project_text(self, pooled):
        return self.text_model.head(pooled)

    def vision_post_layernorm(self, tokens):
        return self.post_layernorm(tokens)

    def project_vision(self, tokens):
        attention = self.head.attention  # nn.MultiheadAttention: in_proj stacks the query, key, value weights
        C = tokens.shape[-1]
        value = F.linear(tokens, attention.in_proj_weight[2 * C:], attention.in_proj_bias[2 * C:])  # [B, N, C]
        pooled = attention.out_proj(value)  # the pooling's output when its query attends to this patch alone
        return pooled + self.head.mlp(self.head.layernorm(pooled))

    @property
    def vision_width(self):
        return self.post_layernorm.normalized_shape[0]

    @property
    def projection_dim(self):
        return self.text_model.head.out_features
