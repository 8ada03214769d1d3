"""LLaVA-1.5 that sees K compressed visual tokens instead of N, over transformers' LlavaForConditionalGeneration.

The steps are separate so that a notebook can run the encoders once and compare methods:
``encode`` (one vision forward + the text embedding) -> ``compress`` (any rclib method) ->
``generate`` (project the K tokens, splice them into the prompt, greedy decoding). ``answer`` chains
the three and times them; ``run`` does the last two on an encoded batch. Both return a :class:`Run`,
everything a caller reports or draws, so nothing downstream re-runs a stage.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from rclib.images import read_image
from rclib.methods import METHODS
from rclib.methods import compress as compress_tokens
from rclib.methods.checks import check_budget
from rclib.methods.common import keep_and_drop
from rclib.models.llm_pruning import generate_pruned
from rclib.models.text import SYSTEM_PROMPT, TextOptions, TextTower, text_similarity
from rclib.models.vision import encode_vision
from rclib.result import CompressionResult


@dataclass
class Encoded:
    """A batch after the encoders, in the model's device: what compression and generation read."""

    features: torch.Tensor  # [B, N, C] layer -2 patch tokens, the ones the LLM would see
    cls_attn: torch.Tensor  # [B, N] last vision layer's [CLS] -> patch attention
    text_sim: torch.Tensor  # [B, N] cosine between the text embedding and each projected final patch token
    keys: torch.Tensor  # [B, N, C] last vision layer's k_proj outputs for the patches
    grid: tuple[int, int]  # (h, w) patch grid, N = h * w in raster order
    questions: list[str]  # the questions as asked
    prompts: list[str]  # the LLM prompts, one image placeholder each
    texts: list[str]  # what the CLIP text tower embedded (the questions, or the released code's prompt line)
    input_ids: torch.Tensor  # [B, L] the processor's tokens, left-padded, N image tokens per row
    attention_mask: torch.Tensor  # [B, L] 1 for real tokens
    pixel_values: torch.Tensor  # [B, 3, H, W] the preprocessed images the patch grid covers
    cls_attn_heads: torch.Tensor | None = None  # [B, N] the feature layer's [CLS] attention, mean of the heads
    keys_heads: torch.Tensor | None = None  # [B, N, C / heads] the feature layer's keys, mean of the heads

    def __len__(self) -> int:
        return self.features.shape[0]

    def with_feature_layer_scores(self) -> Encoded:
        """The same batch with the scores FasterVLM and VisionZip define in place of RC's: [CLS] attention and
        keys of the feature layer (LLaVA's penultimate), per head, averaged over heads. Run a peer on it to
        run it as its paper does; the default ``cls_attn`` / ``keys`` are RC's (last layer, one wide head),
        shared by all methods for ablations."""
        if self.cls_attn_heads is None or self.keys_heads is None:
            raise ValueError("this Encoded has no feature-layer scores; make it with CompressedLlava.encode")
        return replace(self, cls_attn=self.cls_attn_heads, keys=self.keys_heads)

    @property
    def n_tokens(self) -> int:
        return self.features.shape[1]


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


PROMPT_FORMATS = ("vicuna_v1", "chat_template")
IMAGE_PREPROCESS = ("pad", "crop")


def build_prompt(processor, question: str, prompt_format: str = "chat_template") -> str:
    """The LLM prompt for one image and the question.

    "vicuna_v1": LLaVA-1.5's evaluation prompt, its system prompt then " USER: <image>\n{question}
    ASSISTANT:". "chat_template": the checkpoint's chat template (llava-hf's has no system prompt); a
    processor without one gets LLaVA-1.5's plain "USER: <image>\n{question} ASSISTANT:".
    """
    if prompt_format == "vicuna_v1":
        return f"{SYSTEM_PROMPT} USER: {processor.image_token}\n{question} ASSISTANT:"
    if processor.chat_template:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return f"USER: {processor.image_token}\n{question} ASSISTANT:"


def check_input_format(image_preprocess: str | None, prompt_format: str | None) -> None:
    """Raise a ValueError naming the choices for an unknown image preprocessing or prompt format (None passes)."""
    if image_preprocess not in (None, *IMAGE_PREPROCESS):
        raise ValueError(f"image_preprocess must be one of {IMAGE_PREPROCESS}, got {image_preprocess!r}")
    if prompt_format not in (None, *PROMPT_FORMATS):
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")


def pad_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """LLaVA-1.5's expand2square: the image centred on a square of colour ``fill``, its longer side long."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def mean_colour(image_processor) -> tuple[int, ...]:
    """The processor's mean pixel as LLaVA-1.5 pads with it: int(mean * 255) per channel."""
    return tuple(int(x * 255) for x in image_processor.image_mean)


def preprocess_image(image, image_preprocess: str, image_processor):
    """An image as the processor should receive it: "pad" pads it to a square in the processor's mean
    colour first (LLaVA-1.5's image_aspect_ratio="pad"), "crop" leaves it to the processor, whose centre
    crop cuts the sides of a non-square image. A path is read first; arrays and tensors become PIL images."""
    image = read_image(image)
    if image_preprocess == "crop":
        return image
    from transformers.image_transforms import to_pil_image

    pil = image if isinstance(image, Image.Image) else to_pil_image(image)
    return pad_to_square(pil.convert("RGB"), mean_colour(image_processor))


def image_span(ids: torch.Tensor, image_token_id: int, n_tokens: int) -> tuple[int, int]:
    """Start and end of the single run of ``n_tokens`` image placeholders in a 1-D row of token ids."""
    positions = torch.nonzero(ids == image_token_id).flatten()
    if len(positions) != n_tokens or int(positions[-1] - positions[0]) != n_tokens - 1:
        raise ValueError(f"expected one run of {n_tokens} image tokens in the prompt, found {len(positions)} "
                         "image tokens; put exactly one image placeholder in each prompt")
    return int(positions[0]), int(positions[0]) + n_tokens


def left_pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [L_b, H] -> zero-padded on the left [B, L, H] and the attention mask [B, L] (1 = real)."""
    length = max(len(row) for row in rows)
    embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long, device=rows[0].device)
    for b, row in enumerate(rows):
        embeds[b, length - len(row):] = row
        mask[b, length - len(row):] = 1
    return embeds, mask


def splice_image_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_tokens: torch.Tensor,
                        n_output: torch.Tensor, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The LLM's input: each prompt with its projected visual tokens in place of its image placeholders.

    model: a LlavaForConditionalGeneration. input_ids [B, L] and attention_mask [B, L] (any padding side),
    each row holding one run of ``n_tokens`` image placeholders; image_tokens [B, K, C] vision-side tokens
    (before the projector), of which row b uses the first n_output[b]. Differentiable (training calls it
    with gradients). Returns inputs_embeds [B, L', H] and attention_mask [B, L'], left-padded.
    """
    image_embeds = model.model.multi_modal_projector(image_tokens)  # [B, K, H]
    embed = model.get_input_embeddings()
    rows = []
    for b in range(len(input_ids)):
        ids = input_ids[b][attention_mask[b].bool()]  # this prompt, unpadded
        start, end = image_span(ids, model.config.image_token_id, n_tokens)
        rows.append(torch.cat([embed(ids[:start]), image_embeds[b, :int(n_output[b])], embed(ids[end:])]))
    return left_pad(rows)


def check_llava_config(config) -> None:
    """Raise if the checkpoint is not a LLaVA-1.5-style model with a CLIP vision tower."""
    if config.vision_config.model_type != "clip_vision_model":
        raise ValueError(f"rclib reads [CLS] attention from a CLIP vision tower; this checkpoint's vision tower "
                         f"is {config.vision_config.model_type!r}")
    if config.vision_feature_select_strategy != "default" or not isinstance(config.vision_feature_layer, int):
        raise ValueError("rclib expects LLaVA-1.5's feature selection: one vision_feature_layer, CLS dropped "
                         f"('default'); got layer {config.vision_feature_layer} and "
                         f"{config.vision_feature_select_strategy!r}")


SCORES = ("own", "shared")  # the [CLS] scores a method gets: its authors' (MethodSpec.scores) or RC's, for all


def scored(encoded: Encoded, method: str, scores: str) -> Encoded:
    """``encoded`` with the scores ``method`` reads: its own (``METHODS[method].scores``) or RC's shared ones."""
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {SCORES} (the method's own scores or RC's for all), got {scores!r}")
    own = method in METHODS and METHODS[method].scores == "feature_layer"
    return encoded.with_feature_layer_scores() if scores == "own" and own else encoded


def timed(device: torch.device, fn, *args, clock=time.perf_counter, **kwargs):
    """(fn(*args, **kwargs), seconds on ``clock``, wall time by default), waiting for the GPU on both ends."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    start = clock()
    value = fn(*args, **kwargs)
    synchronize()
    return value, clock() - start


class CompressedLlava:
    """A LLaVA-1.5-architecture checkpoint (transformers) with a CLIP text tower, generating from K tokens."""

    def __init__(self, model, processor, text_tower: TextTower, name: str = "", text_encoder_name: str = "",
                 image_preprocess: str = "crop", prompt_format: str = "chat_template"):
        check_llava_config(model.config)
        check_input_format(image_preprocess, prompt_format)
        width = model.config.vision_config.hidden_size
        if text_tower.vision_width != width:
            raise ValueError(f"the text tower's visual head takes width {text_tower.vision_width} but the LLaVA vision "
                             f"tower has width {width}: pair the checkpoint with the CLIP it was built on")
        self.model = model.eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        self.text_tower = text_tower.eval()
        self.name = name  # how the checkpoint was asked for (registry name, hub id or folder)
        self.text_encoder_name = text_encoder_name  # likewise for the text tower
        self.image_preprocess = image_preprocess  # "pad": to a square in the mean colour first (LLaVA-1.5); "crop"
        self.prompt_format = prompt_format  # "vicuna_v1" (LLaVA-1.5's evaluation) or "chat_template"

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
        if len(images) != len(questions):
            raise ValueError(f"got {len(images)} images for {len(questions)} questions; pass one image per question")
        prompts = [build_prompt(self.processor, q, self.prompt_format) for q in questions]
        images = [preprocess_image(i, self.image_preprocess, self.processor.image_processor) for i in images]
        batch = self.processor(images=images, text=prompts, padding=True, return_tensors="pt")
        pixel_values = batch["pixel_values"].to(self.device, self.dtype)
        vision = encode_vision(self.model.model.vision_tower, pixel_values, self.model.config.vision_feature_layer)
        texts = options.texts(questions, prompts, self.processor.image_token)
        text_embeds = self.text_tower.embed_text(texts, options.text_pooling, options.text_max_length)  # [B, D]
        patch_embeds = self.text_tower.project_patches(vision.last_hidden_state, options.post_layernorm)  # [B, N, D]
        return Encoded(features=vision.features, cls_attn=vision.cls_attn,
                       text_sim=text_similarity(text_embeds, patch_embeds).to(self.device), keys=vision.keys,
                       grid=vision.grid, questions=list(questions), prompts=prompts, texts=texts,
                       input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=pixel_values, cls_attn_heads=vision.cls_attn_heads, keys_heads=vision.keys_heads)

    def compress(self, encoded: Encoded, method: str = "rc", budget: int | None = None, scores: str = "own",
                 **options) -> CompressionResult:
        """Compress the encoded batch with any rclib method (see ``rclib.compress``).

        scores: "own" gives a method the [CLS] scores its authors read (``MethodSpec.scores``: FasterVLM, VisionZip
        and VisPruner the feature layer's, per head), "shared" gives every method RC's (for the ablation that
        isolates the selection rule). rc's text weight reads this model's CLIP joint width (``text_dim``) unless given.
        """
        if method == "rc":
            options.setdefault("text_dim", self.text_tower.projection_dim)
        encoded = scored(encoded, method, scores)
        return compress_tokens(encoded.features, encoded.cls_attn, encoded.text_sim, encoded.keys,
                               method=method, budget=budget, **options)

    @torch.no_grad()
    def llm_inputs(self, encoded: Encoded, result: CompressionResult) -> tuple[torch.Tensor, torch.Tensor]:
        """Each prompt with its K_b projected tokens in place of the N image tokens, left-padded.

        Returns inputs_embeds [B, L, H] and attention_mask [B, L].
        """
        if len(result) != len(encoded):
            raise ValueError(f"the result holds {len(result)} samples, the encoded batch {len(encoded)}")
        return splice_image_tokens(self.model, encoded.input_ids.to(self.device),
                                   encoded.attention_mask.to(self.device), result.tokens.to(self.device, self.dtype),
                                   result.n_output, encoded.n_tokens)

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
        embeds, mask = self.llm_inputs(encoded, result)
        return self.model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
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
        :meth:`llm_inputs` builds from all N tokens, -1 elsewhere."""
        places = torch.full((len(encoded), length), -1, dtype=torch.long, device=self.device)
        for b in range(len(encoded)):
            ids = encoded.input_ids[b][encoded.attention_mask[b].bool()]  # this prompt, unpadded
            start, end = image_span(ids, self.model.config.image_token_id, encoded.n_tokens)
            pad = length - len(ids)
            places[b, pad + start:pad + end] = torch.arange(encoded.n_tokens, device=self.device)
        return places

    @torch.no_grad()
    def generate_inside(self, encoded: Encoded, method: str, budget: int | None = None, max_new_tokens: int = 32,
                        scores: str = "own", **options) -> tuple[CompressionResult, torch.Tensor, torch.Tensor]:
        """Greedy decoding with an inside-LLM method (fastv...) pruning the image tokens between decoder layers.

        Returns the result (what the last decoder layer saw, as a selection of the N image tokens, with the visual
        tokens every layer read in ``tokens_per_layer``), the new token ids [B, T] and the per-layer provenance
        [B, n_layers, N] (image token n entered layer l). scores: as in :meth:`compress`.
        """
        encoded = scored(encoded, method, scores)
        spec = METHODS[method]
        spec.check_options(options)
        budget = check_budget(budget)  # the same refusals as rclib.compress (a budget per sample, zero, a float)
        pruner = spec.fn(encoded.features, encoded.cls_attn, encoded.text_sim, encoded.keys, budget, **options)
        embeds, mask = self.llm_inputs(encoded, compress_tokens(encoded.features, method="full"))
        eos = self.model.generation_config.eos_token_id
        generation = generate_pruned(self.model.model.language_model, self.model.lm_head, embeds, mask,
                                     self.image_places(encoded, embeds.shape[1]), pruner, encoded.n_tokens,
                                     max_new_tokens, [eos] if isinstance(eos, int) else list(eos or ()),
                                     self.pad_token_id)
        result = keep_and_drop(encoded.features, generation.seen[:, -1], method, generation.scores)
        return replace(result, tokens_per_layer=generation.visual_tokens), generation.ids, generation.seen

    def run(self, encoded: Encoded, method: str = "rc", budget: int | None = None, max_new_tokens: int = 32,
            transform=None, **options) -> Run:
        """Compress an encoded batch and generate from it, timing both (``seconds`` has no vision entry).

        transform: an optional change to the result before the LLM reads it (a teaching experiment, such
        as shuffling the kept tokens); the Run holds the result the LLM read. Inside-LLM methods
        (``METHODS[method].stage == "inside_llm"``) prune while generating: one ``generate`` entry, and
        ``layer_seen`` says which image tokens each decoder layer saw. A method that keeps every token (``full``)
        ignores a budget, and the Run records None: what ran.
        """
        budget = budget if method not in METHODS or METHODS[method].takes_budget else None
        if method in METHODS and METHODS[method].stage == "inside_llm":
            if transform:
                raise ValueError(f"{method!r} prunes inside the LLM: there is no result to transform before it reads it")
            (result, ids, seen), t_generate = timed(self.device, self.generate_inside, encoded, method, budget,
                                                    max_new_tokens, **options)
            return Run(encoded, result, self.decode(ids), {"generate": t_generate}, method, budget, options, seen,
                       self.n_llm_layers)
        result, t_compress = timed(self.device, self.compress, encoded, method, budget, **options)
        result = transform(result) if transform else result
        texts, t_generate = timed(self.device, self.generate, encoded, result, max_new_tokens)
        return Run(encoded, result, texts, {"compress": t_compress, "generate": t_generate}, method, budget, options,
                   None, self.n_llm_layers)

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
        pixels = encoded.pixel_values.float().cpu().permute(0, 2, 3, 1)  # [B, 3, H, W] -> [B, H, W, 3]
        if processor.do_normalize:
            pixels = pixels * torch.tensor(processor.image_std) + torch.tensor(processor.image_mean)
        if processor.do_rescale:
            pixels = pixels / processor.rescale_factor
        return pixels.round().clamp(0, 255).to(torch.uint8).numpy()
