"""LLaVA-NeXT through the family interface: identity with transformers, tiles of different layouts in one batch,
every method, token counts in the model's units, row-end tokens."""
import numpy as np
import pytest
import torch

from rclib.methods import METHODS

PINPOINTS = [[64, 128], [128, 64], [128, 128], [64, 192]]  # tile layouts 1x2, 2x1, 2x2, 1x3 of 64 px crops
QUESTIONS = ["what colour is the circle ?", "how many shapes are there in this picture ?", "where is it ?"]
MAX_NEW = 6


@pytest.fixture(scope="session")
def tiny_next_dir(tmp_path_factory, tiny_clip_dir, tiny_llava_dir):
    """A LlavaNextForConditionalGeneration (tiny Llama) on the tiny CLIP's vision tower, 64 px crops of 8 x 8
    patches, four tile layouts, saved with save_pretrained."""
    from transformers import (AutoProcessor, CLIPModel, LlamaConfig, LlavaNextConfig,
                              LlavaNextForConditionalGeneration, LlavaNextImageProcessor, LlavaNextProcessor)

    llava_processor = AutoProcessor.from_pretrained(tiny_llava_dir)
    tokenizer = llava_processor.tokenizer
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                       initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    config = LlavaNextConfig(vision_config=clip.config.vision_config, text_config=text, image_grid_pinpoints=PINPOINTS,
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(1)
    model = LlavaNextForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    image_processor = LlavaNextImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                              image_grid_pinpoints=PINPOINTS)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=llava_processor.chat_template)
    folder = tmp_path_factory.mktemp("tiny-llava-next")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def next_model(tiny_next_dir, tiny_clip_dir):
    from rclib.models import load

    return load(tiny_next_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def next_images():
    """Three images whose sizes give three tile layouts (wide, tall, square)."""
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((60, 130, 3), (140, 70, 3), (100, 96, 3))]


def test_batch_mixes_tile_layouts(next_model, next_images):
    encoded = next_model.encode(next_images, QUESTIONS)
    counts = encoded.token_counts.tolist()
    assert len(set(counts)) == 3, f"the three images should give three token counts, got {counts}"
    assert all(c > 64 for c in counts), "base view (64) plus tiles"
    assert encoded.grid is None
    ids = encoded.input_ids
    placeholders = (ids == next_model.model.config.image_token_id).sum(1)
    assert placeholders.tolist() == encoded.n_llm_tokens.tolist(), "what the processor expands = what rclib counts"


def test_full_is_identical_to_transformers_generate(next_model, next_images):
    encoded = next_model.encode(next_images, QUESTIONS)
    batch = next_model.processor(images=next_images, text=encoded.prompts, padding=True, return_tensors="pt")
    generated = next_model.model.generate(**batch, do_sample=False, max_new_tokens=MAX_NEW)
    reference = generated[:, batch["input_ids"].shape[1]:]
    ours = next_model.generate_ids(encoded, next_model.compress(encoded, "full"), MAX_NEW)
    assert torch.equal(ours, reference)


def test_full_llm_input_equals_transformers_own(next_model, next_images):
    """The spliced inputs of all tokens (newlines included) are transformers' inputs_embeds, row by row."""
    encoded = next_model.encode(next_images[:1], QUESTIONS[:1])
    batch = next_model.processor(images=next_images[:1], text=encoded.prompts, return_tensors="pt")
    seen = []
    hook = next_model.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            next_model.model(**batch)
    finally:
        hook.remove()
    embeds, _ = next_model.llm_inputs(encoded, next_model.compress(encoded, "full"))
    torch.testing.assert_close(embeds, seen[0])


@pytest.mark.parametrize("method", [m for m in METHODS if "target" not in METHODS[m].needs and m != "pool"])
def test_batch_equals_single_for_every_method(next_model, next_images, method):
    budget = None if METHODS[method].adaptive else 40
    batch = next_model.answer(next_images, QUESTIONS, method=method, budget=budget, max_new_tokens=MAX_NEW)
    for b in range(3):
        single = next_model.answer(next_images[b], QUESTIONS[b], method=method, budget=budget, max_new_tokens=MAX_NEW)
        assert batch.texts[b] == single.texts[0], method
        n = int(single.encoded.token_counts[0])
        assert torch.equal(batch.result[b].fate[:, :n], single.result.fate), method
        assert batch.counts(b) == single.counts(0), method


def test_counts_are_in_the_models_units(next_model, next_images):
    run = next_model.answer(next_images[2], QUESTIONS[2], method="fastervlm", budget=30, max_new_tokens=2)
    counts = run.counts(0)
    assert counts["n_input_tokens"] == int(run.encoded.n_llm_tokens[0])
    assert counts["n_input_tokens"] > int(run.encoded.token_counts[0]), "row ends counted in"
    kept = run.result.kept_indices[0]
    assert len(kept) == 30 and torch.equal(kept, kept.sort().values)
    rows = run.encoded.token_rows[0, kept]
    tile_rows = len(set(rows[rows >= 0].tolist()))
    assert counts["n_output_tokens"] == 30 + tile_rows, "one row end per tile row that kept a token"
    full = next_model.run(run.encoded, "full", max_new_tokens=2).counts(0)
    assert full["n_output_tokens"] == full["n_input_tokens"]


def test_newlines_none_drops_row_ends(tiny_next_dir, tiny_clip_dir, next_images):
    from rclib.models import load

    model = load(tiny_next_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32, newlines="none")
    run = model.answer(next_images[0], QUESTIONS[0], method="fastervlm", budget=30, max_new_tokens=2)
    assert run.counts(0)["n_output_tokens"] == 30
    with pytest.raises(ValueError, match="newlines must be one of"):
        load(tiny_next_dir, text_encoder=tiny_clip_dir, device="cpu", newlines="some")
