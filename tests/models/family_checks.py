"""What the family tests share: their questions, and batches of images of different sizes answered as the images
one by one."""
import torch

QUESTIONS = ["what colour is the circle ?", "how many shapes are there in this picture ?", "where is it ?"]


def assert_batch_equals_single(model, images, method: str, budget: int | None, max_new_tokens: int = 6) -> None:
    """The batch's answers, fates and counts (in the model's units) are those of each image alone."""
    batch = model.answer(images, QUESTIONS[:len(images)], method=method, budget=budget, max_new_tokens=max_new_tokens)
    for b, image in enumerate(images):
        single = model.answer(image, QUESTIONS[b], method=method, budget=budget, max_new_tokens=max_new_tokens)
        assert batch.texts[b] == single.texts[0], method
        n = int(single.encoded.token_counts[0])
        assert torch.equal(batch.result[b].fate[:, :n], single.result.fate), method
        assert batch.counts(b) == single.counts(0), method


def transformers_generate(model, images, prompts: list[str], max_new_tokens: int = 6) -> torch.Tensor:
    """The new token ids of transformers' own greedy generate on the checkpoint's processor outputs."""
    batch = model.processor(images=images, text=prompts, padding=True, return_tensors="pt")
    generated = model.model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
    return generated[:, batch["input_ids"].shape[1]:]


def assert_full_is_transformers(model, images, max_new_tokens: int = 6):
    """With every token kept, rclib's answers are transformers' own (ids equal, batch padded), and its count of each
    image's tokens in the LLM input is the processor's. Returns the encoded batch."""
    encoded = model.encode(images, QUESTIONS[:len(images)])
    placeholders = (encoded.input_ids == model.model.config.image_token_id).sum(1)
    assert placeholders.tolist() == encoded.n_llm_tokens.tolist()
    ours = model.generate_ids(encoded, model.compress(encoded, "full"), max_new_tokens)
    assert torch.equal(ours, transformers_generate(model, images, encoded.prompts, max_new_tokens))
    return encoded


def assert_llm_input_is_transformers(model, images, encoded) -> None:
    """With every token kept, the LLM input rclib builds (row ends, shrunk tiles...) is the inputs_embeds
    transformers' own forward gives its language model, place for place."""
    batch = model.processor(images=images, text=encoded.prompts, padding=True, return_tensors="pt")
    seen = []
    hook = model.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()), with_kwargs=True)
    try:
        with torch.no_grad():
            model.model(**batch)
    finally:
        hook.remove()
    embeds, _ = model.llm_inputs(encoded, model.compress(encoded, "full"))
    torch.testing.assert_close(embeds, seen[0])
