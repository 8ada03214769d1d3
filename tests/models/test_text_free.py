"""The text scores without a text tower (rclib.models.text_free): shapes, the tokens they rank first, and the
attention score against a layer run with eager attention."""
import pytest
import torch

from rclib.methods import compress
from rclib.models.text_free import (TEXT_SCORES, attention_score, content_tokens, embedding_score, layer_attention,
                                    question_ids, question_places)

QUESTIONS = ["what color is the red circle ?", "is there a blue square on the left of the big triangle ?"]


@pytest.fixture(scope="module")
def encoded(tiny_model, tiny_images):
    """Two questions of different lengths: the prompts are left-padded."""
    return tiny_model.encode(tiny_images[:2], QUESTIONS)


@pytest.fixture(scope="module")
def llm_input(tiny_model, encoded):
    """(embeds [B, L, H], mask [B, L], image [B, L]) of the prompts with all N image tokens."""
    embeds, mask = tiny_model.llm_inputs(encoded, compress(encoded.features, method="full"))
    return embeds, mask, tiny_model.image_places(encoded, embeds.shape[1])


def test_the_switch_values():
    assert TEXT_SCORES == ("embedding", "attention")


def test_question_ids_and_content_tokens(tiny_model):
    tokenizer = tiny_model.processor.tokenizer
    ids, mask = question_ids(tokenizer, [*QUESTIONS, "what is the ?", "what is <image> the red ?"])
    assert ids.shape == mask.shape == (4, 13) and mask.sum(1).tolist() == [7, 13, 4, 6]
    assert tokenizer.decode(ids[0, :7]) == QUESTIONS[0]
    content = content_tokens(tokenizer, ids, mask)
    words = [[tokenizer.decode([int(t)]) for t in row[keep]] for row, keep in zip(ids, content)]
    assert words[0] == ["color", "red", "circle"]  # no stop word, no punctuation
    assert words[1] == ["blue", "square", "left", "big", "triangle"]
    assert words[2] == ["what", "is", "the", "?"]  # nothing but stop words: every token
    assert words[3] == ["red"]  # no special token


def test_embedding_score_ranks_the_token_that_is_the_question_first():
    torch.manual_seed(0)
    question, visual = torch.randn(2, 5, 8), torch.randn(2, 7, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    visual[0, 3] = 2 * question[0].mean(0)  # the mean of the question's embeddings, scaled: cosine 1
    visual[1, 5] = question[1, :3].mean(0)
    score = embedding_score(question, mask, visual)
    assert score.shape == (2, 7) and score.dtype == torch.float32
    assert score.argmax(1).tolist() == [3, 5]
    torch.testing.assert_close(score[[0, 1], [3, 5]], torch.ones(2))
    question[1, 3:] = 100.0  # the tokens the mask leaves out do not count
    torch.testing.assert_close(embedding_score(question, mask, visual), score)


def test_attention_score_ranks_the_token_the_question_looks_at_first():
    B, heads, L, N = 2, 3, 10, 4
    attention = torch.full((B, heads, L, L), 0.01)
    image = torch.tensor([[-1, 0, 1, 2, 3, -1, -1, -1, -1, -1]] * B)  # 4 image tokens at places 1..4
    query = torch.zeros(B, L, dtype=torch.bool)
    query[:, 6:8] = True
    attention[0, :, 6:8, 3] = 0.5  # sample 0's question looks at image token 2 (place 3)
    attention[1, :, 6:8, 1] = 0.5  # sample 1's at token 0
    attention[1, :, 9, 4] = 1.0  # a place outside the question looks at token 3: not read
    score = attention_score(attention, query, image, N)
    assert score.shape == (B, N) and score.argmax(1).tolist() == [2, 0]
    torch.testing.assert_close(score[0], torch.tensor([0.01, 0.01, 0.5, 0.01]))


def test_question_places_mark_the_question_in_the_prompt(tiny_model, encoded):
    tokenizer = tiny_model.processor.tokenizer
    ids, mask = question_ids(tokenizer, QUESTIONS)
    places = question_places(encoded.input_ids, encoded.attention_mask, ids, mask)
    for b, question in enumerate(QUESTIONS):
        assert tokenizer.decode(encoded.input_ids[b][places[b]]) == question
    content = content_tokens(tokenizer, ids, mask)
    read = question_places(encoded.input_ids, encoded.attention_mask, ids, mask, content)
    assert tokenizer.decode(encoded.input_ids[0][read[0]]) == "color red circle"
    with pytest.raises(ValueError, match="does not hold its question"):
        question_places(encoded.input_ids.flip(0), encoded.attention_mask.flip(0), ids, mask)


@pytest.mark.parametrize("layer", [0, 1])
def test_attention_score_is_the_eager_layers_attention(tiny_model, tiny_llava_dir, encoded, llm_input, layer):
    from transformers import LlavaForConditionalGeneration

    embeds, mask, image = llm_input
    tokenizer = tiny_model.processor.tokenizer
    ids, question_mask = question_ids(tokenizer, QUESTIONS)
    query = question_places(encoded.input_ids, encoded.attention_mask, ids, question_mask)
    language_model = tiny_model.model.model.language_model
    implementation = language_model.config._attn_implementation
    calls = [decoder.register_forward_hook(lambda *args: pytest.fail("a layer after the one read ran"))
             for decoder in language_model.layers[layer + 1:]]
    with torch.no_grad():
        attention = layer_attention(language_model, embeds, mask, layer)
    for call in calls:
        call.remove()
    assert language_model.config._attn_implementation == implementation  # switched back
    score = attention_score(attention, query, image, encoded.n_tokens)

    eager = LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir, attn_implementation="eager").eval()
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # as generate numbers a left-padded batch
    with torch.no_grad():
        weights = eager.model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                             output_attentions=True).attentions[layer]  # [B, heads, L, L]
    L = mask.shape[1]
    assert attention.shape == weights.shape == (2, 4, L, L)
    torch.testing.assert_close(attention, weights)
    for b in range(2):
        paid = weights[b].mean(0)[query[b]].mean(0)  # [L]: head mean, then the question's rows
        torch.testing.assert_close(score[b], paid[image[b] >= 0])  # image places in token order
