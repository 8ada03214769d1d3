"""Both text towers (transformers CLIPModel, open_clip) give the same kind of output, with correct values."""
import pytest
import torch
import torch.nn.functional as F

from rclib.models import SYSTEM_PROMPT, OpenClipTextTower, TextOptions, TransformersTextTower, load_text_tower
from rclib.models.loading import text_tower_spec
from rclib.models.text import text_similarity

TEXTS = ["what colour is the circle ?", "how many shapes", "a"]


@pytest.fixture(scope="session")
def open_clip_tower(tiny_open_clip_dir):
    return load_text_tower(text_tower_spec(tiny_open_clip_dir), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def clip_tower(tiny_model):
    return tiny_model.text_tower


@pytest.fixture(params=["transformers", "open_clip"])
def tower(request, clip_tower, open_clip_tower):
    return clip_tower if request.param == "transformers" else open_clip_tower


def test_towers_load_as_their_kind(clip_tower, open_clip_tower):
    assert isinstance(clip_tower, TransformersTextTower) and isinstance(open_clip_tower, OpenClipTextTower)
    assert clip_tower.context_length == open_clip_tower.context_length == 77


@pytest.mark.parametrize("pooling", ["eos", "last"])
def test_same_kind_of_output(tower, pooling):
    text = tower.embed_text(TEXTS, pooling=pooling)
    assert text.shape == (3, 16) and text.dtype == torch.float32
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    patches = tower.project_patches(torch.randn(2, 65, 32))
    assert patches.shape == (2, 64, 16)
    sim = text_similarity(text[:2], patches)
    assert sim.shape == (2, 64) and bool((sim.abs() <= 1 + 1e-6).all())


def test_transformers_tower_matches_clipmodel(tiny_clip_dir, clip_tower):
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        expected = F.normalize(clip.get_text_features(**batch).pooler_output, dim=-1)
        torch.testing.assert_close(clip_tower.embed_text(TEXTS), expected)

        # released pooling: the last slot of a row padded to 77, no attention mask
        padded = tokenizer(TEXTS, padding="max_length", max_length=77, return_tensors="pt")["input_ids"]
        last = clip.text_projection(clip.text_model(input_ids=padded).last_hidden_state[:, -1])
        torch.testing.assert_close(clip_tower.embed_text(TEXTS, pooling="last"), F.normalize(last, dim=-1))

        # the visual head on patch tokens is CLIP's own head on the CLS token: feed CLS as a "patch"
        vision = clip.vision_model(torch.randn(2, 3, 64, 64))
        cls_as_patch = vision.last_hidden_state[:, [0, 0]]  # [B, 2, C]: "CLS" + one "patch"
        image_embeds = clip.visual_projection(vision.pooler_output)  # CLIP's post-layernorm + projection of CLS
        torch.testing.assert_close(clip_tower.project_patches(cls_as_patch)[:, 0], image_embeds)
        no_ln = clip_tower.project_patches(cls_as_patch, post_layernorm=False)[:, 0]
        torch.testing.assert_close(no_ln, clip.visual_projection(vision.last_hidden_state[:, 0]))


def test_open_clip_tower_matches_open_clip(tiny_open_clip_dir, open_clip_tower):
    import open_clip

    model = open_clip_tower.model
    tokens = open_clip.get_tokenizer(f"local-dir:{tiny_open_clip_dir}")(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(open_clip_tower.embed_text(TEXTS), model.encode_text(tokens, normalize=True))
        hidden = torch.randn(2, 65, 32)
        expected = model.visual.ln_post(hidden[:, 1:]) @ model.visual.proj
        torch.testing.assert_close(open_clip_tower.project_patches(hidden), expected)


def test_text_options_choose_the_text_and_validate():
    prompts = [f"{SYSTEM_PROMPT} USER: <image>\nq1 ASSISTANT:", "USER: <image>\nq2 ASSISTANT:"]
    assert TextOptions().texts(["q1", "q2"], prompts, "<image>") == ["q1", "q2"]
    released = TextOptions.preset("released")
    assert released.texts(["q1", "q2"], prompts, "<image>") == [f"<s> {SYSTEM_PROMPT} USER:", "<s> USER:"]
    assert (released.text_pooling, released.text_max_length, released.post_layernorm) == ("last", 20, False)
    assert TextOptions.preset("released", text_source="question").texts(["q1"], prompts[:1], "<image>") == ["q1"]
    assert TextOptions.preset(None) == TextOptions.preset("paper") == TextOptions()
    for bad, message in (({"text_pooling": "mean"}, "text_pooling"), ({"text_source": "system"}, "text_source"),
                         ({"text_max_length": 1}, "text_max_length")):
        with pytest.raises(ValueError, match=message):
            TextOptions(**bad)
    with pytest.raises(ValueError, match="unknown text preset"):
        TextOptions.preset("authors")
    with pytest.raises(ValueError, match=r"unknown text option\(s\) \['pooling'\]"):
        TextOptions.preset("released", pooling="eos")


@pytest.mark.parametrize("max_length", [5, 20])
def test_released_pooling_reads_the_last_slot_of_a_short_row(tower, max_length):
    """max_length L: rows truncated to L (EOS kept last), padded to L, last slot read without a mask."""
    long_text = "what colour is the circle in the top left of this picture ? the big one , not the small red square"
    texts = [long_text, "a"]
    last = tower.embed_text(texts, pooling="last", max_length=max_length)
    eos = tower.embed_text(texts, pooling="eos", max_length=max_length)
    torch.testing.assert_close(last[0], eos[0])  # truncated: the last slot is the EOS
    assert not torch.allclose(last[1], eos[1])  # padded: the last slot is a pad after EOS
    with pytest.raises(ValueError, match="between 2 and the text tower's context of 77"):
        tower.embed_text(texts, max_length=78)


def test_projection_dim_is_the_joint_width(tower):
    assert tower.projection_dim == 16


def test_text_similarity_is_a_cosine():
    text, patches = torch.randn(2, 8), torch.randn(2, 5, 8)
    expected = F.cosine_similarity(text[:, None], patches, dim=-1)
    torch.testing.assert_close(text_similarity(text, patches), expected)
