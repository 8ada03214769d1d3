"""A deeper tiny LLaVA for the inside-LLM methods: the shared tiny model's weights, four decoder layers."""
import copy

import pytest
import torch

QUESTIONS = ["what colour is the circle ?", "how many shapes are there in this picture ?", "where is it ?"]


@pytest.fixture(scope="session")
def deep_model(tiny_model):
    """The tiny LLaVA with 4 decoder layers (layers 2 and 3 new, seeded), so that FastV with K = 2 (an explicit layer) runs."""
    from transformers import LlavaForConditionalGeneration

    from rclib.models import CompressedModel

    config = copy.deepcopy(tiny_model.model.config)
    config.text_config.num_hidden_layers = 4
    torch.manual_seed(1)
    model = LlavaForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(tiny_model.model.state_dict(), strict=False)
    assert not unexpected and all(".layers.2." in k or ".layers.3." in k for k in missing), missing
    model.generation_config = copy.deepcopy(tiny_model.model.generation_config)
    return CompressedModel(model, tiny_model.processor, tiny_model.text_tower, name="tiny-deep")


@pytest.fixture(scope="session")
def questions():
    return QUESTIONS


@pytest.fixture(scope="session")
def deep_encoded(deep_model, tiny_images):
    return deep_model.encode(tiny_images[:3], QUESTIONS)
