"""Shared fixtures: tiny random models built from configs, saved to temporary folders in their own
formats, and loaded back through rclib's real loader. Session-scoped: built once per test run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

# A tiny LLaVA-1.5: CLIP vision tower at 64 px with 8 px patches (8 x 8 = 64 patch tokens), width 32.
IMAGE_SIZE = 64
PATCH_SIZE = 8
VISION_WIDTH = 32
JOINT_DIM = 16  # CLIP joint embedding space
# Words of the tiny LLaVA tokenizer (whitespace-split word level); anything else maps to <unk>.
LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
LLAVA_WORDS = ("USER ASSISTANT : ? . , a an the what which where is are colour color shape shapes of in on this "
               "image picture red green blue yellow circle square triangle star how many there left right top "
               "bottom big small one two three four").split()
CLIP_SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'].upper() }}: {% for part in message['content'] %}"
                 "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %} "
                 "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def word_tokenizer(words: list[str], special: list[str], template: str, **special_tokens):
    """A transformers fast tokenizer over a fixed word list; template adds bos / eos (tokenizers syntax)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(special + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in special if t in template])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **special_tokens)


def tiny_vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=VISION_WIDTH, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=JOINT_DIM)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A transformers CLIPModel (text + vision, joint dim 16) with its tokenizer, saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPTextConfig, CLIPModel

    tokenizer = word_tokenizer(LLAVA_WORDS, CLIP_SPECIAL, "<|startoftext|> $A <|endoftext|>",
                               bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=JOINT_DIM,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=tiny_vision_config().to_dict(),
                        projection_dim=JOINT_DIM)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory):
    """An open_clip CLIP (OpenAI-style text tower, vision width 32) saved in open_clip's hub format."""
    import open_clip
    import safetensors.torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.push_to_hf_hub import save_config_for_hf

    model_cfg = {"embed_dim": JOINT_DIM, "quick_gelu": True,
                 "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "width": VISION_WIDTH,
                                "layers": 2, "head_width": 8},
                 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**model_cfg)
    model.visual.image_mean, model.visual.image_std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # as create_model sets
    folder = tmp_path_factory.mktemp("tiny-open-clip")
    safetensors.torch.save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    save_config_for_hf(model, folder / "open_clip_config.json", model_config=model_cfg)
    return folder


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory, tiny_clip_dir):
    """A LlavaForConditionalGeneration (tiny Llama) whose vision tower is the tiny CLIP's, with a chat
    template processor, saved with save_pretrained (safetensors)."""
    from transformers import (CLIPImageProcessor, CLIPModel, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)

    tokenizer = word_tokenizer(LLAVA_WORDS, LLAVA_SPECIAL, "<s> $A", bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    config = LlavaConfig(vision_config=tiny_vision_config(), text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())  # LLaVA keeps CLIP's vision tower
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)  # +1: CLIP's CLS, as llava-hf processors
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_llava_dir, tiny_clip_dir):
    """The tiny LLaVA with its transformers CLIP text tower, through ``rclib.load`` (cpu, float32)."""
    from rclib.models import load

    return load(tiny_llava_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_images():
    """Six random 64 x 80 RGB images (uint8 HWC arrays), different from each other."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(IMAGE_SIZE, 80, 3), dtype=np.uint8) for _ in range(6)]
