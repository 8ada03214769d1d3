from rclib.shapes.tokenizer import BOS, EOS, IMAGE, build_tokenizer
from rclib.shapes.world import sample_vqa, vocabulary


def test_every_world_word_has_its_own_id():
    tokenizer = build_tokenizer(append_eos=False)
    ids = tokenizer.convert_tokens_to_ids(vocabulary())
    assert len(set(ids)) == len(vocabulary()) and tokenizer.unk_token_id not in ids


def test_round_trip_questions_answers_and_captions():
    tokenizer = build_tokenizer(append_eos=False)
    for sample in sample_vqa(0, 25):
        for text in (sample.question, sample.answer, sample.scene.caption):
            ids = tokenizer(text)["input_ids"]
            assert ids[0] == tokenizer.bos_token_id and tokenizer.unk_token_id not in ids
            assert len(ids) == 1 + len(text.split()), "one token per word"
            assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_clip_flavour_appends_eos_and_fits_the_longest_caption():
    clip = build_tokenizer(append_eos=True)
    llava = build_tokenizer(append_eos=False)
    assert clip("what color is the circle ?")["input_ids"][-1] == clip.eos_token_id
    assert llava("what color is the circle ?")["input_ids"][-1] != llava.eos_token_id
    assert clip.eos_token_id != 2, "transformers' CLIP text model treats eos id 2 as the legacy argmax pooling"
    longest = " and ".join(["a red circle"] * 14)
    assert len(clip(longest)["input_ids"]) <= clip.model_max_length


def test_image_token_and_prompt_words(tmp_path):
    tokenizer = build_tokenizer(append_eos=False)
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = loaded("USER: <image><image>\nis there a red circle ? ASSISTANT:")["input_ids"]
    assert ids.count(loaded.convert_tokens_to_ids(IMAGE)) == 2
    assert loaded.unk_token_id not in ids
    assert (loaded.bos_token, loaded.eos_token) == (BOS, EOS)
