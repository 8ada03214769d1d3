"""The LLaVA wrapper: identity with transformers, exactly K image tokens, order, batching, answers."""
from contextlib import contextmanager

import pytest
import torch

from rclib.models import Encoded, Run, build_prompt

QUESTIONS = ["what colour is the circle ?", "how many shapes are there in this picture ?", "where is it ?"]
MAX_NEW = 8


@pytest.fixture(scope="session")
def encoded(tiny_model, tiny_images) -> Encoded:
    return tiny_model.encode(tiny_images[:3], QUESTIONS)


@contextmanager
def llm_inputs_seen(model):
    """Record the inputs_embeds and attention_mask of every language-model call."""
    calls = []

    def record(module, args, kwargs):
        calls.append((kwargs["inputs_embeds"].detach().clone(), kwargs["attention_mask"].detach().clone()))

    hook = model.model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        hook.remove()


def test_full_is_identical_to_transformers_generate(tiny_model, tiny_images, encoded):
    """Greedy ids equal transformers' own generate on the same processor inputs (left-padded batch)."""
    processor = tiny_model.processor
    batch = processor(images=tiny_images[:3], text=encoded.prompts, padding=True, return_tensors="pt")
    assert len(set(batch["attention_mask"].sum(1).tolist())) == 3, "prompts of different lengths: padding is exercised"
    generated = tiny_model.model.generate(**batch, do_sample=False, max_new_tokens=MAX_NEW)
    reference = generated[:, batch["input_ids"].shape[1]:]  # transformers returns prompt + new tokens
    ours = tiny_model.generate_ids(encoded, tiny_model.compress(encoded, "full"), MAX_NEW)
    assert ours.shape[1] > 2, "the tiny model should say something"
    assert torch.equal(ours, reference)


def test_exactly_k_image_tokens_reach_the_llm(tiny_model, encoded):
    result = tiny_model.compress(encoded, "fastervlm", budget=10)
    prompt_lengths = encoded.attention_mask.sum(1)  # each prompt holds N = 64 image tokens
    with llm_inputs_seen(tiny_model) as calls:
        tiny_model.generate_ids(encoded, result, max_new_tokens=2)
    embeds, mask = calls[0]  # the prefill
    expected = prompt_lengths - encoded.n_tokens + result.n_output
    assert result.n_output.tolist() == [10, 10, 10]
    assert mask.sum(1).tolist() == expected.tolist()
    assert embeds.shape[1] == int(expected.max())


def test_kept_tokens_reach_the_llm_in_original_order(tiny_model, encoded):
    result = tiny_model.compress(encoded, "fastervlm", budget=7)
    projector = tiny_model.model.model.multi_modal_projector
    with llm_inputs_seen(tiny_model) as calls:
        tiny_model.generate_ids(encoded, result, max_new_tokens=1)
    embeds, mask = calls[0]
    for b, kept in enumerate(result.kept_indices):
        assert torch.equal(kept, kept.sort().values)
        real = embeds[b][mask[b].bool()]  # this sample's row, padding removed
        ids = encoded.input_ids[b][encoded.attention_mask[b].bool()]
        start = int(torch.nonzero(ids == tiny_model.model.config.image_token_id)[0])
        expected = projector(encoded.features[b, kept])  # [K, H], ascending original indices
        torch.testing.assert_close(real[start:start + len(kept)], expected)


def test_batch_with_different_k_equals_single_runs(tiny_model, tiny_images):
    budgets_differ = tiny_model.compress(tiny_model.encode(tiny_images[:3], QUESTIONS), "rc")
    assert len(set(budgets_differ.n_output.tolist())) == 3, "rc should choose a different K per sample here"
    batch = tiny_model.answer(tiny_images[:3], QUESTIONS, method="rc", max_new_tokens=MAX_NEW)
    for b in range(3):
        single = tiny_model.answer(tiny_images[b], QUESTIONS[b], method="rc", max_new_tokens=MAX_NEW)
        assert batch.texts[b] == single.texts[0]
        assert torch.equal(batch.result[b].fate, single.result.fate)
        torch.testing.assert_close(batch.result[b].tokens, single.result.tokens)


def test_answer_returns_the_whole_run_with_timings(tiny_model, tiny_images):
    run = tiny_model.answer(tiny_images[:2], QUESTIONS[:2], method="rc", budget=12, text_pooling="last")
    assert isinstance(run, Run) and len(run) == 2 and (run.method, run.budget, run.options) == ("rc", 12, {})
    assert all(isinstance(text, str) and text for text in run.texts)
    assert run.encoded.questions == QUESTIONS[:2] and len(run.result) == 2
    assert run.result.n_output.tolist() == [12, 12]
    assert list(run.seconds) == ["vision", "compress", "generate"] and all(t > 0 for t in run.seconds.values())
    again = tiny_model.run(run.encoded, "rc", 12)  # the same batch from its encoding: the same answers
    assert again.texts == run.texts and list(again.seconds) == ["compress", "generate"]


def test_released_text_options_make_text_sim_the_same_text_for_every_question(tiny_model, tiny_images):
    image = tiny_images[0]
    one = tiny_model.encode([image, image], QUESTIONS[:2], text_source="prompt_first_line")
    assert one.text_inputs == ["<s> USER:", "<s> USER:"]  # the first line of this checkpoint's chat-template prompt
    torch.testing.assert_close(one.text_sim[0], one.text_sim[1])
    paper = tiny_model.encode([image, image], QUESTIONS[:2])
    assert paper.text_inputs == QUESTIONS[:2]
    assert not torch.allclose(paper.text_sim[0], paper.text_sim[1])


def test_prompt_uses_the_chat_template_else_llava_format(tiny_model):
    assert build_prompt(tiny_model.processor, "why ?") == "USER: <image>\nwhy ? ASSISTANT:"

    class NoTemplate:
        chat_template = None
        image_token = "<image>"

    assert build_prompt(NoTemplate(), "why ?") == "USER: <image>\nwhy ? ASSISTANT:"


def test_images_as_paths_and_unreadable_files(tiny_model, tiny_images, tmp_path):
    from PIL import Image

    path = tmp_path / "shape.png"
    Image.fromarray(tiny_images[0]).save(path)
    from_path = tiny_model.encode(str(path), QUESTIONS[0])
    from_array = tiny_model.encode(tiny_images[0], QUESTIONS[0])
    torch.testing.assert_close(from_path.features, from_array.features)

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    for bad in (broken, tmp_path / "missing.jpg"):
        with pytest.raises(ValueError, match=bad.name):
            tiny_model.encode(bad, QUESTIONS[0])


def test_one_image_per_question(tiny_model, tiny_images):
    with pytest.raises(ValueError, match="2 images for 3 questions"):
        tiny_model.encode(tiny_images[:2], QUESTIONS)
