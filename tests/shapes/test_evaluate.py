import numpy as np
import torch

from rclib.shapes.build import ShapesModelConfig, build_all
from rclib.shapes.data import make_bank, prompt_table
from rclib.models.vision import encode_vision
from rclib.shapes.data import pixel_values
from rclib.shapes.evaluate import answer_batch, answer_logits, eval_rows, single_turns
from rclib.shapes.world import NUM_PATCHES


def small_setup():
    clip, clip_tokenizer, llava, processor = build_all(ShapesModelConfig())
    bank = make_bank(5, 6, workers=1)
    table = prompt_table(processor.tokenizer, bank.q_text, bank.q_answer)
    return clip, llava, processor.tokenizer, bank, table


def test_single_turn_batch_matches_the_processor_prompt():
    from PIL import Image

    from rclib.shapes.build import PROMPT_TEMPLATE, build_processor

    _, llava, tokenizer, bank, table = small_setup()
    row = int(eval_rows(bank)[0])
    batch = answer_batch(table, single_turns(bank, [row]), NUM_PATCHES, tokenizer)
    processor = build_processor(tokenizer)
    image = Image.fromarray(bank.images[bank.q_scene[row]].numpy())
    expected = processor(images=[image], text=[PROMPT_TEMPLATE.format(question=bank.q_text[row])], return_tensors="pt")
    prompt_length = expected["input_ids"].shape[1]
    assert torch.equal(batch.ids[0, :prompt_length], expected["input_ids"][0])
    assert batch.target_pos[0, 0] == prompt_length - 1, "the last prompt token predicts the answer"
    assert batch.targets[0, 1] == tokenizer.eos_token_id


def test_pruned_batch_has_k_image_tokens_and_same_logits_shape():
    _, llava, tokenizer, bank, table = small_setup()
    rows = eval_rows(bank)[:3]
    vision = encode_vision(llava.model.vision_tower, pixel_values(bank.images[bank.q_scene[rows]]))
    assert vision.cls_attn.shape == (3, NUM_PATCHES)
    assert torch.allclose(vision.cls_attn.sum(-1), torch.ones(3), atol=0.05), "[CLS] attends mostly to patches"
    keep = 14
    features = vision.features[:, :keep]
    batch = answer_batch(table, single_turns(bank, rows), keep, tokenizer)
    assert int((batch.ids == llava.config.image_token_id).sum()) == 3 * keep
    with torch.no_grad():
        logits = answer_logits(llava, batch, features)
    assert logits.shape == (3, 2, llava.config.text_config.vocab_size)


def test_multi_turn_targets_follow_each_answer():
    _, _, tokenizer, bank, table = small_setup()
    scene_rows = np.flatnonzero(bank.q_scene.numpy() == 0)[:3]
    turns = [[(bank.q_text[r], bank.q_answer[r]) for r in scene_rows]]
    batch = answer_batch(table, turns, NUM_PATCHES, tokenizer)
    for t, r in enumerate(scene_rows):
        position = batch.target_pos[0, 2 * t]
        assert batch.ids[0, position + 1] == table.answer_ids[bank.q_answer[r]] == batch.targets[0, 2 * t]
        assert batch.ids[0, position + 2] == tokenizer.eos_token_id


def test_grounding_loss_handles_conversations_shorter_than_the_turn_limit():
    from rclib.shapes.train import grounding_loss

    _, llava, tokenizer, bank, table = small_setup()
    scene_rows = np.flatnonzero(bank.q_scene.numpy() == 0)
    turns = [[(bank.q_text[r], bank.q_answer[r]) for r in scene_rows[:2]], [(bank.q_text[scene_rows[0]], bank.q_answer[scene_rows[0]])]]
    batch = answer_batch(table, turns, NUM_PATCHES, tokenizer)
    masks = torch.zeros(2, batch.target_pos.shape[1] // 2, NUM_PATCHES, dtype=torch.bool)
    masks[0, :2] = bank.q_mask[scene_rows[:2]]
    masks[1, :1] = bank.q_mask[scene_rows[:1]]
    length = batch.ids.shape[1]
    uniform = torch.full((2, 4, length, length), 1.0 / length)  # (B, H, L, L)
    image_start = table.ids[turns[0][0][0]].index(llava.config.image_token_id)
    loss = grounding_loss(uniform, batch, masks, image_start, offset=3)
    expected = -torch.log(masks.sum(-1)[masks.any(-1)].float() / length + 1e-6).mean()
    assert torch.allclose(loss, expected)
