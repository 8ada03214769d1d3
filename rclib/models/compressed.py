"""A multimodal model that sees K compressed visual tokens instead of N, for every family in rclib.models.families.

The steps are separate so that a notebook can run the encoders once and compare methods:
``encode`` (one vision forward + the text embedding) -> ``compress`` (any rclib method) ->
``generate`` (project the K tokens, splice them into the prompt, greedy decoding). ``answer`` chains
the three and times them; ``run`` does the last two on an encoded batch. Both return a :class:`Run`,
everything a caller reports or draws, so nothing downstream re-runs a stage.
"""
from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import numpy as np
import torch

from rclib.images import read_images
from rclib.methods import METHODS
from rclib.methods import compress as compress_tokens
from rclib.methods.checks import check_budget
from rclib.methods.common import keep_and_drop
from rclib.models.batch import Encoded, LLMInput, Run, stack_rows, text_and_rope_positions
from rclib.models.crops import BUDGET_SCOPES, compress_by_crop
from rclib.models.families import family_of
from rclib.models.families.base import (left_pad, pad_rows, placeholder_span, row_ends, slot_rows, slots_with_row_ends,
                                        with_row_ends)
from rclib.models.llm_pruning import generate_pruned
from rclib.models.prompts import build_prompt, check_input_format, display_pixels, preprocess_image
from rclib.models.text import TextOptions, TextTower, text_similarity
from rclib.models.text_free import (ATTENTION_LAYER, TEXT_SCORES, attention_score, content_tokens, embedding_score,
                                   layer_attention, question_ids, question_places)
from rclib.questions import check_questions
from rclib.result import CompressionResult, stack_results


SCORES = ("own", "shared")  # the [CLS] scores a method gets: its authors' (MethodSpec.scores) or RC's, for all


def scored(encoded: Encoded, method: str, scores: str) -> Encoded:
    """``encoded`` with the scores ``method`` reads: its own (``METHODS[method].scores``) or RC's shared ones."""
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {SCORES} (the method's own scores or RC's for all), got {scores!r}")
    own = method in METHODS and METHODS[method].scores == "feature_layer"
    return encoded.with_feature_layer_scores() if scores == "own" and own else encoded


def other_layouts(encoded: Encoded) -> list[str]:
    """The images of ``encoded`` that are not one square patch grid (tiles, a rectangle), each as its grids' shapes
    ("8 x 8 + 16 x 16"): what a method of ``MethodSpec.layout == "grid"`` cannot read."""
    return [" + ".join(f"{h} x {w}" for h, w in views) for views in encoded.views or [[encoded.grid]] * len(encoded)
            if len(views) != 1 or views[0][0] != views[0][1]]


def check_layout(method: str, encoded: Encoded, family) -> None:
    """Raise a ValueError naming the family when ``method`` reads one square patch grid per image
    (``MethodSpec.layout == "grid"``) and an image of ``encoded`` is tiles or a rectangle."""
    if method not in METHODS or METHODS[method].layout != "grid":
        return
    other = other_layouts(encoded)
    if other:
        raise ValueError(f"method {method!r} reads each image as one square patch grid, but a {family.title} image "
                         f"here is {other[0]} tokens: choose a method that reads any set of tokens")


def compress_images(encoded: Encoded, budget: int | None, method: str, scores: str, **options) -> CompressionResult:
    """Each group of images with equal token counts compressed by ``method`` (see CompressedModel.compress)."""
    groups = encoded.groups()
    if len(groups) > 1:
        parts = [compress_images(encoded.subset(index), budget, method, scores, **options) for index in groups]
        return stack_results(parts, groups)
    encoded = scored(encoded, method, scores)
    return compress_tokens(encoded.features, encoded.cls_attn, encoded.text_sim, encoded.keys, method=method,
                           budget=budget, **options)


def no_text_tower(family) -> str:
    """Why a text encoder given to a family without a text tower is refused."""
    return (f"{family.title} has no text tower: its vision tower was trained without one, so no text encoder's "
            "space is its own; rclib scores text with the LLM itself (text_score=): pass no text encoder")


def check_text_tower(family, text_tower: TextTower | None, vision_config) -> None:
    """Raise a ValueError with the reason when ``text_tower`` cannot score ``family``'s patches: a family without a
    text tower given one, one with a text tower given none or another kind, a visual head of another width."""
    if family.text_tower_kind is None:
        if text_tower is not None:
            raise ValueError(no_text_tower(family))
        return
    if text_tower is None:
        raise ValueError(f"a {family.title} checkpoint scores its patches with a {family.text_tower_kind} text tower: "
                         "pass the one it was built on as text_encoder=")
    if text_tower.kind != family.text_tower_kind:
        raise ValueError(f"a {family.title} checkpoint scores its patches with a {family.text_tower_kind} text "
                         f"tower, but the text encoder given is a {text_tower.kind}: pass the "
                         f"{family.text_tower_kind} whose vision tower the checkpoint holds")
    if text_tower.vision_width != vision_config.hidden_size:
        raise ValueError(f"the text tower's visual head takes width {text_tower.vision_width} but the vision "
                         f"tower has width {vision_config.hidden_size}: pair the checkpoint with the model it was "
                         "built on")


def timed(device: torch.device, fn, *args, clock=time.perf_counter, **kwargs):
    """(fn(*args, **kwargs), seconds on ``clock``, wall time by default), waiting for the GPU on both ends."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = clock()
    value = fn(*args, **kwargs)
    synchronize()
    return value, clock() - start


class CompressedModel:
    """A checkpoint of any family rclib runs (:mod:`rclib.models.families`) with a CLIP text tower, generating
    from K tokens. The family says how images become visual tokens and how compressed tokens go back."""

    def __init__(self, model, processor, text_tower: TextTower | None, name: str = "", text_encoder_name: str = "",
                 image_preprocess: str = "crop", prompt_format: str = "chat_template", newlines: str = "rows",
                 text_score: str = "attention", budget_scope: str = "image"):
        self.family = family_of(model.config.model_type)
        self.family.check_config(model.config)
        self.family.check_newlines(newlines)
        check_input_format(image_preprocess, prompt_format)
        check_text_tower(self.family, text_tower, model.config.vision_config)
        if text_score not in TEXT_SCORES:
            raise ValueError(f"text_score must be one of {TEXT_SCORES}, got {text_score!r}")
        if budget_scope not in BUDGET_SCOPES:
            raise ValueError(f"budget_scope must be one of {BUDGET_SCOPES}, got {budget_scope!r}")
        self.model = model.eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        self.text_tower = text_tower.eval() if text_tower is not None else None
        self.text_score = text_score  # without a text tower: the LLM-side text score (rclib.models.text_free)
        self.budget_scope = budget_scope  # "image": one budget over an image's tokens; "crop": a share per crop
        self.name = name  # how the checkpoint was asked for (registry name, hub id or folder)
        self.text_encoder_name = text_encoder_name  # likewise for the text tower
        self.image_preprocess = image_preprocess  # "pad": to a square in the mean colour first (LLaVA-1.5); "crop"
        self.prompt_format = prompt_format  # "vicuna_v1" (LLaVA-1.5's evaluation) or "chat_template"
        self.newlines = newlines  # row-end tokens after compression (families with tiles): see families.NEWLINES

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def n_llm_layers(self) -> int:
        """The language model's decoder layers."""
        return len(self.model.model.language_model.layers)

    @torch.no_grad()
    def encode(self, images, questions, preset: str | None = None, **text_options) -> Encoded:
        """Images (PIL, numpy, tensor or path) and questions -> the encoders' outputs, for a batch.

        preset: None / "paper" or "released" (see :meth:`TextOptions.preset`); text_options: fields of
        :class:`~rclib.models.text.TextOptions`, overriding the preset's. A single image and question
        string make a batch of one.
        """
        options = TextOptions.preset(preset, **text_options)
        if isinstance(questions, str):
            images, questions = [images], [questions]
        questions = check_questions(self, questions)  # text, no chat markers; "questions[i]: ..." with the fix
        images = read_images(images, len(questions))  # one RGB image per question; "images[i]: ..." with the fix
        prompts = [build_prompt(self.processor, q, self.prompt_format) for q in questions]
        images = [preprocess_image(i, self.image_preprocess, self.processor.image_processor) for i in images]
        batch = self.processor(images=images, text=prompts, padding=True, return_tensors="pt")
        visual = self.family.visual_batch(self.model, batch)
        text_inputs = options.texts(questions, prompts, self.processor.image_token)
        positions = self.family.positions(self.model, batch)  # [3, B, L] or None (1-D positions)
        encoded = Encoded(features=visual.features, cls_attn=visual.cls_attn, text_sim=None, keys=visual.keys,
                          grid=visual.grid, questions=list(questions), prompts=prompts, text_inputs=text_inputs,
                          input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          pixel_values=self.family.batch_pixels(batch).to(self.device, self.dtype),
                          cls_attn_head_mean=visual.cls_attn_head_mean, keys_head_mean=visual.keys_head_mean,
                          token_counts=visual.n_tokens, token_places=visual.places, views=visual.views,
                          n_llm_tokens=visual.n_llm_tokens, token_crops=visual.crops,
                          llm_positions=None if positions is None else positions.transpose(0, 1))
        if self.text_tower is None:
            return replace(encoded, text_sim=self.llm_text_scores(encoded))
        text_embeds = torch.cat([self.text_tower.embed_text([text], options.text_pooling, options.text_max_length)
                                 for text in text_inputs])  # [B, D] one at a time: a batch scores as its samples
        patch_embeds = self.text_tower.project_tokens(visual.final_tokens, options.post_layernorm)  # [B, N, D]
        return replace(encoded, text_sim=text_similarity(text_embeds, patch_embeds).to(self.device))

    def llm_text_scores(self, encoded: Encoded) -> torch.Tensor:
        """[B, N] each token's relevance to its text without a text tower: ``self.text_score`` of
        :mod:`rclib.models.text_free` from the text's content words, an early LLM layer's attention from them to
        the image ("attention") or the cosine of their mean input embedding with each token ("embedding"). One
        sample at a time, so that a batch scores as its samples."""
        return pad_rows([self.llm_text_score(encoded.subset([b]))[0] for b in range(len(encoded))])

    def llm_text_score(self, one: Encoded) -> torch.Tensor:
        """[1, N] :meth:`llm_text_scores` of a one-image batch."""
        tokenizer = self.processor.tokenizer
        ids, mask = question_ids(tokenizer, one.text_inputs)
        content = content_tokens(tokenizer, ids, mask).to(self.device)
        if self.text_score == "embedding":
            embeds = self.model.get_input_embeddings()(ids.to(self.device))  # [1, T, H]
            return embedding_score(embeds, content, self.family.project(self.model, one.features))
        full = self.spliced(one, compress_tokens(one.features, method="full"))
        layer = min(ATTENTION_LAYER, self.n_llm_layers - 1)
        attention = layer_attention(self.model.model.language_model, full.embeds, full.mask, layer, full.positions)
        prompt = one.input_ids[:, -full.mask.shape[1]:].to(self.device)  # the row without the batch's left padding
        query = question_places(prompt, full.mask, ids.to(self.device), mask.to(self.device), read=content)
        return attention_score(attention, query, full.places, one.n_tokens)

    @property
    def text_dim(self) -> int:
        """The width of the space the text score compares in: the text tower's joint space, else the LLM's."""
        if self.text_tower is not None:
            return self.text_tower.projection_dim
        return self.model.get_input_embeddings().embedding_dim

    def compress(self, encoded: Encoded, method: str = "rc", budget: int | None = None, scores: str = "own",
                 check_values: bool = True, **options) -> CompressionResult:
        """Compress the encoded batch with any rclib method (see ``rclib.compress``).

        scores: "own" gives a method the [CLS] scores its authors read (``MethodSpec.scores``: FasterVLM, VisionZip
        and VisPruner the feature layer's, per head), "shared" gives every method RC's (for the ablation that
        isolates the selection rule). rc's text weight reads this model's CLIP joint width (``text_dim``) unless given.
        check_values: False skips ``rclib.compress``'s scan for NaN / inf (its one host sync), for callers that pass
        this model's own encoder outputs. Images with different token counts are compressed group by group
        (:meth:`Encoded.groups`); with ``budget_scope="crop"`` each crop of an image on its own
        (:mod:`rclib.models.crops`).
        """
        if method == "rc":
            options.setdefault("text_dim", self.text_dim)
        check_layout(method, encoded, self.family)
        images = partial(compress_images, method=method, scores=scores, check_values=check_values, **options)
        return compress_by_crop(encoded, budget, images) if self.budget_scope == "crop" else images(encoded, budget)

    def row_ends(self, encoded: Encoded, result: CompressionResult) -> list[torch.Tensor]:
        """Per sample, [K_b] bool: the output slots a row-end token follows in the LLM input (see
        :data:`rclib.models.families.NEWLINES`); none for families without row ends or with ``newlines="none"``."""
        if self.newlines != "rows" or self.family.newline(self.model) is None:
            return [torch.zeros(int(k), dtype=torch.bool, device=self.device) for k in result.n_output]
        rows = slot_rows(result, encoded.token_rows.to(result.weights.device))  # [B, K]
        return [row_ends(rows[b, :int(k)]).to(self.device) for b, k in enumerate(result.n_output)]

    def image_sequences(self, encoded: Encoded, result: CompressionResult) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per sample, what its image placeholders become: [K'_b, H] its output tokens projected, with the row-end
        tokens its family's LLM reads, and [K'_b] long the output slot at each place (-1: a row end)."""
        embeds = self.family.project(self.model, result.tokens.to(self.device, self.dtype))  # [B, K, H]
        newline = self.family.newline(self.model)
        return [(with_row_ends(embeds[b, :len(ends)], ends, newline), slots_with_row_ends(ends))
                for b, ends in enumerate(self.row_ends(encoded, result))]

    @torch.no_grad()
    def llm_inputs(self, encoded: Encoded, result: CompressionResult) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prompt with its compressed image sequence in place of its image placeholders, left-padded.

        Returns inputs_embeds [B, L, H] and attention_mask [B, L].
        """
        llm_input = self.spliced(encoded, result)
        return llm_input.embeds, llm_input.mask

    def spliced(self, encoded: Encoded, result: CompressionResult) -> LLMInput:
        """The LLM input of :meth:`llm_inputs`, with where each place comes from and, for M-RoPE families, where
        each place sits: an output token at its anchor token's position, text at its own."""
        if len(result) != len(encoded):
            raise ValueError(f"the result holds {len(result)} samples, the encoded batch {len(encoded)}")
        embed = self.model.get_input_embeddings()
        anchors = result.weights.argmax(dim=2).to(self.device) if result.weights.shape[1] else None  # [B, K]
        rows, places, positions = [], [], []
        for b, (sequence, slots) in enumerate(self.image_sequences(encoded, result)):
            real = encoded.attention_mask[b].bool()
            ids = encoded.input_ids[b][real].to(self.device)  # this prompt, unpadded
            expected = int(encoded.n_llm_tokens[b]) if encoded.n_llm_tokens is not None else encoded.n_tokens
            start, end = placeholder_span(ids, self.model.config.image_token_id, expected)
            rows.append(torch.cat([embed(ids[:start]), sequence, embed(ids[end:])]))
            places.append(torch.cat([slots.new_full((start,), -1), slots, slots.new_full((len(ids) - end,), -1)]))
            if encoded.llm_positions is not None:
                original = encoded.llm_positions[b][:, real.to(encoded.llm_positions.device)].to(self.device)  # [3, L_b]
                image = original[:, start + anchors[b, slots]] if len(slots) else original[:, :0]
                positions.append(torch.cat([original[:, :start], image, original[:, end:]], dim=1))
        embeds, mask = left_pad(rows)
        length = embeds.shape[1]
        place = torch.stack([torch.cat([p.new_full((length - len(p),), -1), p]) for p in places])
        return LLMInput(embeds, mask, place, text_and_rope_positions(positions, mask) if positions else None)

    @property
    def pad_token_id(self) -> int:
        """What fills a row after its EOS: the tokenizer's pad token, else its EOS."""
        pad = self.processor.tokenizer.pad_token_id
        return pad if pad is not None else self.processor.tokenizer.eos_token_id

    @torch.no_grad()
    def generate_ids(self, encoded: Encoded, result: CompressionResult, max_new_tokens: int = 32,
                     **generate_options) -> torch.Tensor:
        """Greedy decoding from the compressed input: new token ids [B, T], pad-filled after EOS.

        generate_options go to transformers' ``generate`` (e.g. ``min_new_tokens``, ``streamer``).
        """
        llm_input = self.spliced(encoded, result)
        if llm_input.positions is not None:
            generate_options["position_ids"] = llm_input.positions
        return self.model.generate(inputs_embeds=llm_input.embeds, attention_mask=llm_input.mask, do_sample=False,
                                   max_new_tokens=max_new_tokens, pad_token_id=self.pad_token_id,
                                   **generate_options)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """New token ids [B, T] -> one answer string per sample, special tokens removed."""
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def generate(self, encoded: Encoded, result: CompressionResult, max_new_tokens: int = 32) -> list[str]:
        """Greedy answers, one string per sample."""
        return self.decode(self.generate_ids(encoded, result, max_new_tokens))

    def image_places(self, encoded: Encoded, length: int) -> torch.Tensor:
        """[B, length] long: the image token index 0..N-1 at each place of the left-padded LLM input that
        :meth:`llm_inputs` builds from all N tokens, -1 elsewhere (the prompt's text, row-end tokens)."""
        places = self.spliced(encoded, compress_tokens(encoded.features, method="full")).places
        assert places.shape[1] == length, f"the LLM input of all tokens has {places.shape[1]} places, not {length}"
        return places

    @torch.no_grad()
    def generate_inside(self, encoded: Encoded, method: str, budget: int | None = None, max_new_tokens: int = 32,
                        scores: str = "own", **options) -> tuple[CompressionResult, torch.Tensor, torch.Tensor]:
        """Greedy decoding with an inside-LLM method (fastv...) pruning the image tokens between decoder layers.

        Returns the result (what the last decoder layer saw, as a selection of the N image tokens, with the visual
        tokens every layer read in ``tokens_per_layer``), the new token ids [B, T] and the per-layer provenance
        [B, n_layers, N] (image token n entered layer l). scores: as in :meth:`compress`. Images with different
        token counts run group by group (:meth:`Encoded.groups`).
        """
        if self.budget_scope == "crop":
            raise ValueError(f"budget_scope='crop' shares a budget among the crops before the LLM; {method!r} prunes "
                             "inside the LLM over all of an image's tokens: load the model with budget_scope='image'")
        groups = encoded.groups()
        if len(groups) > 1:
            parts = [self.generate_inside(encoded.subset(index), method, budget, max_new_tokens, scores, **options)
                     for index in groups]
            return (stack_results([p[0] for p in parts], groups),
                    stack_rows([p[1] for p in parts], groups, self.pad_token_id),
                    stack_rows([p[2] for p in parts], groups, False))
        encoded = scored(encoded, method, scores)
        spec = METHODS[method]
        spec.check_options(options)
        budget = check_budget(budget)  # the same refusals as rclib.compress (a budget per sample, zero, a float)
        pruner = spec.fn(encoded.features, encoded.cls_attn, encoded.text_sim, encoded.keys, budget, **options)
        llm_input = self.spliced(encoded, compress_tokens(encoded.features, method="full"))
        embeds, mask = llm_input.embeds, llm_input.mask
        eos = self.model.generation_config.eos_token_id
        generation = generate_pruned(self.model.model.language_model, self.model.lm_head, embeds, mask, llm_input.places,
                                     pruner, encoded.n_tokens, max_new_tokens,
                                     [eos] if isinstance(eos, int) else list(eos or ()), self.pad_token_id,
                                     None if llm_input.positions is None else llm_input.positions[1:])
        result = keep_and_drop(encoded.features, generation.seen[:, -1], method, generation.scores)
        return replace(result, tokens_per_layer=generation.visual_tokens), generation.ids, generation.seen
    def run(self, encoded: Encoded, method: str = "rc", budget: int | None = None, max_new_tokens: int = 32,
            transform=None, check_values: bool = True, **options) -> Run:
        """Compress an encoded batch and generate from it, timing both (``seconds`` has no vision entry).

        transform: an optional change to the result before the LLM reads it (a teaching experiment, such
        as shuffling the kept tokens); the Run holds the result the LLM read. check_values: as in :meth:`compress`
        (False for a hot path on this model's own encoder outputs: the bench, the lmms-eval model). Inside-LLM methods
        (``METHODS[method].placement == "inside_llm"``) prune while generating: one ``generate`` entry, and
        ``layer_seen`` says which image tokens each decoder layer saw. A method that keeps every token (``full``)
        ignores a budget, and the Run records None: what ran.
        """
        budget = budget if method not in METHODS or METHODS[method].takes_budget else None
        if method in METHODS and METHODS[method].placement == "inside_llm":
            if transform:
                raise ValueError(f"{method!r} prunes inside the LLM: there is no result to transform before it reads it")
            (result, ids, seen), t_generate = timed(self.device, self.generate_inside, encoded, method, budget,
                                                    max_new_tokens, **options)
            row_end_tokens = self.row_ends(encoded, compress_tokens(encoded.features, method="full"))
            return Run(encoded, result, self.decode(ids), {"generate": t_generate}, method, budget, options, seen,
                       self.n_llm_layers, torch.stack([ends.sum().cpu() for ends in row_end_tokens]))
        result, t_compress = timed(self.device, self.compress, encoded, method, budget, check_values=check_values,
                                   **options)
        result = transform(result) if transform else result
        texts, t_generate = timed(self.device, self.generate, encoded, result, max_new_tokens)
        return Run(encoded, result, texts, {"compress": t_compress, "generate": t_generate}, method, budget, options,
                   None, self.n_llm_layers, torch.stack([ends.sum().cpu() for ends in self.row_ends(encoded, result)]))

    def answer(self, images, questions, method: str = "rc", budget: int | None = None, max_new_tokens: int = 32,
               **options) -> Run:
        """Encode, compress and generate, each stage timed. options: TextOptions fields go to ``encode``, the
        rest to the method; a ``preset`` (rc's "released") goes to both, since it names the text side too.
        A single image and question string make a batch of one."""
        text_options = {name: options.pop(name) for name in TextOptions.names() & options.keys()}
        encoded, t_vision = timed(self.device, self.encode, images, questions, options.get("preset"), **text_options)
        run = self.run(encoded, method, budget, max_new_tokens, **options)
        run.seconds = {"vision": t_vision, **run.seconds}
        return run

    def display_images(self, encoded: Encoded) -> np.ndarray:
        """The images of ``encoded`` as the patch grid covers them, uint8 [B, H, W, 3], for figures.

        Undoes this model's image processor (its rescale factor, image_mean and image_std), so the pixel
        statistics are those of the processor that made ``encoded.pixel_values``.
        """
        processor = self.processor.image_processor
        return display_pixels(processor, self.family.display_images(processor, encoded.pixel_values, encoded.views))
