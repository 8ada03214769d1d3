"""Qwen2.5-VL through the family interface: merged tokens of images of different sizes, importance from received
attention, no text tower (the LLM-side text score), M-RoPE positions kept, identity with transformers."""
import pytest
import torch
from family_checks import QUESTIONS, assert_batch_equals_single, assert_full_is_transformers, transformers_generate

from rclib.methods import METHODS

MAX_NEW = 6
BEFORE_LLM = [m for m in METHODS if METHODS[m].placement == "before_llm" and "target" not in METHODS[m].needs
              and m != "pool"]


def test_full_is_identical_to_transformers_generate(qwen_model, tiled_images):
    encoded = assert_full_is_transformers(qwen_model, tiled_images, MAX_NEW)
    assert len({view[0] for view in encoded.views}) == 3, f"three image sizes, three grids: {encoded.views}"


def test_kept_tokens_keep_their_mrope_positions(qwen_model, tiled_images):
    """Pruned tokens leave gaps: the kept ones and the text keep the positions they have in the full input."""
    encoded = qwen_model.encode(tiled_images[:1], QUESTIONS[:1])
    full = qwen_model.spliced(encoded, qwen_model.compress(encoded, "full")).positions
    result = qwen_model.compress(encoded, "fastervlm", budget=10)
    pruned = qwen_model.spliced(encoded, result).positions
    kept = result.kept_indices[0]
    ids = encoded.input_ids[0]
    start = int(torch.nonzero(ids == qwen_model.model.config.image_token_id)[0])
    n = int(encoded.token_counts[0])
    torch.testing.assert_close(pruned[1:, 0, -(len(ids) - start - n):], full[1:, 0, start + n:])  # the text after
    torch.testing.assert_close(pruned[1:, 0, start:start + 10], full[1:, 0, start + kept])
    assert torch.equal(pruned[0, 0], torch.arange(pruned.shape[2])), "text positions count the places"


def test_importance_is_received_attention_pooled_over_merge_groups(qwen_model, tiled_images):
    encoded = qwen_model.encode(tiled_images[2:], QUESTIONS[2:])
    importance = encoded.cls_attn[0]
    assert importance.shape == (int(encoded.token_counts[0]),)
    assert bool((importance > 0).all())
    torch.testing.assert_close(importance.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)  # shares of one image


@pytest.mark.parametrize("method", BEFORE_LLM)
def test_batch_equals_single_for_every_method(qwen_model, tiled_images, method):
    assert_batch_equals_single(qwen_model, tiled_images, method, None if METHODS[method].adaptive else 12)


def test_text_scores_are_switches(tiny_qwen_dir, tiled_images):
    from rclib.models import load

    scores = {}
    for name in ("embedding", "attention"):
        model = load(tiny_qwen_dir, device="cpu", dtype=torch.float32, text_score=name)
        scores[name] = model.encode(tiled_images[0], QUESTIONS[0]).text_sim
    assert scores["embedding"].shape == scores["attention"].shape
    assert not torch.allclose(scores["embedding"], scores["attention"])
    with pytest.raises(ValueError, match="text_score must be one of"):
        load(tiny_qwen_dir, device="cpu", text_score="clip")


def test_a_text_encoder_is_refused_with_the_reason(tiny_qwen_dir, tiny_clip_dir):
    from rclib.models import load

    with pytest.raises(ValueError, match="has no text tower"):
        load(tiny_qwen_dir, text_encoder=tiny_clip_dir, device="cpu")


@pytest.mark.parametrize("method", ["fastv", "sparsevlm", "dart", "pdrop"])
def test_inside_llm_methods_keep_mrope_positions(qwen_model, tiled_images, method):
    """Inside Qwen2's LLM: a batch of three image sizes answers as its images one by one, and with nothing pruned
    (a budget of all tokens for FastV) the pruned decoding says what transformers' generate says."""
    batch = qwen_model.answer(tiled_images, QUESTIONS, method=method, budget=12, max_new_tokens=MAX_NEW)
    for b in range(3):
        single = qwen_model.answer(tiled_images[b], QUESTIONS[b], method=method, budget=12, max_new_tokens=MAX_NEW)
        assert batch.texts[b] == single.texts[0], method


def test_fastv_keeping_everything_is_transformers_generate(qwen_model, tiled_images):
    encoded = qwen_model.encode(tiled_images[:1], QUESTIONS[:1])
    n = int(encoded.token_counts[0])
    _, ids, _ = qwen_model.generate_inside(encoded, "fastv", budget=n, max_new_tokens=MAX_NEW)
    reference = transformers_generate(qwen_model, tiled_images[:1], encoded.prompts)
    assert torch.equal(ids[:, :reference.shape[1]], reference)


def test_answer_json_without_a_text_encoder(tmp_path, tiny_qwen_dir, qwen_model, tiled_images, capsys):
    import json

    from PIL import Image

    from rclib.cli import main

    image = tmp_path / "image.png"
    Image.fromarray(tiled_images[1]).save(image)
    assert main(["answer", "--model", str(tiny_qwen_dir), "--image", str(image), "--question", QUESTIONS[1],
                 "--method", "rc", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    encoded = qwen_model.encode([Image.open(image)], [QUESTIONS[1]])
    assert record["n_input_tokens"] == int(encoded.token_counts[0])
    assert 0 < record["n_output_tokens"] <= record["n_input_tokens"]
    assert record["kept_indices"] == sorted(record["kept_indices"])


def test_positions_without_the_processors_token_types(qwen_model, tiled_images):
    """A processor that gives no mm_token_type_ids (older ones): the types come from the image token, the same
    positions."""
    encoded = qwen_model.encode(tiled_images, QUESTIONS)
    batch = qwen_model.processor(images=tiled_images, text=encoded.prompts, padding=True, return_tensors="pt")
    given = qwen_model.family.positions(qwen_model.model, batch)
    batch.pop("mm_token_type_ids")
    assert torch.equal(qwen_model.family.positions(qwen_model.model, batch), given)
