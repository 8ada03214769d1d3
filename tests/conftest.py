"""Shared fixtures: tiny random models built from configs, saved to temporary folders in their own
formats, and loaded back through rclib's real loader. Session-scoped: built once per test run."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from rclib.models import tiny

# A tiny LLaVA-1.5 (rclib.models.tiny): CLIP vision tower at 64 px with 8 px patches (8 x 8 = 64 patch tokens),
# width 32; CLIP joint dim 16.
SHAPES = tiny.ClipShapes()
# Words of the tiny LLaVA tokenizer (whitespace-split word level); anything else maps to <unk>.
LLAVA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
LLAVA_WORDS = ("USER ASSISTANT : ? . , a an the what which where is are colour color shape shapes of in on this "
               "image picture red green blue yellow circle square triangle star how many there left right top "
               "bottom big small one two three four").split()
CLIP_SPECIAL = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ message['role'].upper() }}: {% for part in message['content'] %}"
                 "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}{% endfor %} "
                 "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """A transformers CLIPModel (text + vision, joint dim 16) with its tokenizer, saved with save_pretrained."""
    tokenizer = tiny.word_tokenizer(LLAVA_WORDS, CLIP_SPECIAL, "<|startoftext|> $A <|endoftext|>", "<unk>",
                                    bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    folder = tmp_path_factory.mktemp("tiny-clip")
    tiny.build_clip(SHAPES, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory):
    """An open_clip CLIP (OpenAI-style text tower, vision width 32) saved in open_clip's hub format."""
    import open_clip
    import safetensors.torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.push_to_hf_hub import save_config_for_hf

    model_cfg = {"embed_dim": SHAPES.joint_dim, "quick_gelu": True,
                 "vision_cfg": {"image_size": SHAPES.image_size, "patch_size": SHAPES.patch_size,
                                "width": SHAPES.vision_width, "layers": 2, "head_width": 8},
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
    from transformers import CLIPModel, LlamaConfig

    tokenizer = tiny.word_tokenizer(LLAVA_WORDS, LLAVA_SPECIAL, "<s> $A", "<unk>", bos_token="<s>", eos_token="</s>",
                                    pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    model = tiny.build_llava(SHAPES, text, tokenizer.convert_tokens_to_ids("<image>"))
    tiny.tie_vision_towers(CLIPModel.from_pretrained(tiny_clip_dir), model)  # LLaVA keeps CLIP's vision tower
    processor = tiny.llava_processor(tokenizer, SHAPES.image_size, SHAPES.patch_size, CHAT_TEMPLATE)
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# Tile layouts of the tiled families (pixels, multiples of the 64 px crop): 1 x 2, 2 x 1, 2 x 2, 1 x 3.
PINPOINTS = [[64, 128], [128, 64], [128, 128], [64, 192]]
MAX_TILES = 2  # LLaVA-OneVision's anyres_max: 2 x 2 tiles (4 crops' worth) get shrunk


def llava_words_tokenizer(video: bool = False):
    """The tiny LLaVA's word-level tokenizer (Llama-style specials, an <image> token; ``video``: a <video> token too,
    which LLaVA-OneVision's processor counts)."""
    special = LLAVA_SPECIAL + ["<video>"] * video
    return tiny.word_tokenizer(LLAVA_WORDS, special, "<s> $A", "<unk>", bos_token="<s>", eos_token="</s>",
                               pad_token="<pad>", extra_special_tokens={"image_token": "<image>",
                                                                        **({"video_token": "<video>"} if video else {})})


def tiny_llm(tokenizer, family: str = "llama"):
    """A tiny Llama or Qwen2 config for ``tokenizer``: 2 layers, width 32, room for a few hundred image tokens."""
    import transformers

    config = transformers.LlamaConfig if family == "llama" else transformers.Qwen2Config
    return config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.2,
                  bos_token_id=1, eos_token_id=2, pad_token_id=3)


@pytest.fixture(scope="session")
def tiny_next_dir(tmp_path_factory, tiny_clip_dir):
    """A LlavaNextForConditionalGeneration (tiny Llama) on the tiny CLIP's vision tower: a base view and anyres
    tiles of 64 px crops (8 x 8 patches each, their own [CLS]), saved with save_pretrained."""
    from transformers import CLIPModel

    tokenizer = llava_words_tokenizer()
    model = tiny.build_llava_next(SHAPES, tiny_llm(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), PINPOINTS,
                                  seed=1)
    tiny.tie_vision_towers(CLIPModel.from_pretrained(tiny_clip_dir), model)
    folder = tmp_path_factory.mktemp("tiny-llava-next")
    model.save_pretrained(folder)
    tiny.llava_next_processor(tokenizer, SHAPES, PINPOINTS, CHAT_TEMPLATE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_next_video_dir(tmp_path_factory, tiny_clip_dir):
    """A LlavaNextVideoForConditionalGeneration on the tiny CLIP's vision tower (LLaVA-NeXT's image path)."""
    from transformers import CLIPModel

    tokenizer = llava_words_tokenizer(video=True)
    model = tiny.build_llava_next(SHAPES, tiny_llm(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), PINPOINTS,
                                  seed=4, video=True)
    tiny.tie_vision_towers(CLIPModel.from_pretrained(tiny_clip_dir), model)
    folder = tmp_path_factory.mktemp("tiny-llava-next-video")
    model.save_pretrained(folder)
    tiny.llava_next_processor(tokenizer, SHAPES, PINPOINTS, CHAT_TEMPLATE, video=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory):
    """A transformers SiglipModel (text + vision with its pooling head, no [CLS]) with its tokenizer."""
    tokenizer = tiny.word_tokenizer(LLAVA_WORDS, ["<unk>", "</s>", "<pad>"], "$A </s>", "<unk>", eos_token="</s>",
                                    pad_token="<pad>")
    folder = tmp_path_factory.mktemp("tiny-siglip")
    tiny.build_siglip(replace(SHAPES, text_positions=16), tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_onevision_dir(tmp_path_factory, tiny_siglip_dir):
    """A LlavaOnevisionForConditionalGeneration (tiny Qwen2) whose SigLIP vision tower is the tiny SigLIP's, anyres
    tiles shrunk past MAX_TILES crops' worth, saved with save_pretrained."""
    from transformers import SiglipModel

    tokenizer = llava_words_tokenizer(video=True)
    model = tiny.build_llava_onevision(SHAPES, tiny_llm(tokenizer, "qwen2"), tokenizer.convert_tokens_to_ids("<image>"),
                                       PINPOINTS, MAX_TILES, seed=2)
    tiny.tie_siglip_tower(SiglipModel.from_pretrained(tiny_siglip_dir), model)
    folder = tmp_path_factory.mktemp("tiny-llava-onevision")
    model.save_pretrained(folder)
    tiny.onevision_processor(tokenizer, SHAPES, PINPOINTS, MAX_TILES, CHAT_TEMPLATE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    """A Qwen2_5_VLForConditionalGeneration (tiny ViT with window and full attention, 2 x 2 merger, tiny Qwen2 with
    M-RoPE) and its processor (8 px patches, images of 32^2 to 96^2 pixels), saved with save_pretrained."""
    tokenizer = tiny.qwen_tokenizer(LLAVA_WORDS)
    folder = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    tiny.build_qwen2_5_vl(SHAPES, tokenizer, seed=3).save_pretrained(folder)
    tiny.qwen2_5_vl_processor(tokenizer, SHAPES, min_pixels=32 * 32, max_pixels=96 * 96).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def next_model(tiny_next_dir, tiny_clip_dir):
    """The tiny LLaVA-NeXT with its CLIP text tower, through ``rclib.load`` (cpu, float32)."""
    from rclib.models import load

    return load(tiny_next_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def ov_model(tiny_onevision_dir, tiny_siglip_dir):
    """The tiny LLaVA-OneVision with its SigLIP text tower, through ``rclib.load`` (cpu, float32)."""
    from rclib.models import load

    return load(tiny_onevision_dir, text_encoder=tiny_siglip_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def qwen_model(tiny_qwen_dir):
    """The tiny Qwen2.5-VL (no text tower), through ``rclib.load`` (cpu, float32)."""
    from rclib.models import load

    return load(tiny_qwen_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiled_images():
    """Three images whose sizes give three tile layouts (wide, tall, square)."""
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((60, 130, 3), (140, 70, 3), (100, 96, 3))]


@pytest.fixture(scope="session")
def tiny_model(tiny_llava_dir, tiny_clip_dir):
    """The tiny LLaVA with its transformers CLIP text tower, through ``rclib.load`` (cpu, float32)."""
    from rclib.models import load

    return load(tiny_llava_dir, text_encoder=tiny_clip_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_images():
    """Six random 64 x 80 RGB images (uint8 HWC arrays), different from each other."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(SHAPES.image_size, 80, 3), dtype=np.uint8) for _ in range(6)]
