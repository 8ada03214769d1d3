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
