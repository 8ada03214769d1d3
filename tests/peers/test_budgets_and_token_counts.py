"""Budgets behave the same for every kind of method, and every run says how many visual tokens each LLM layer read."""
import json

import pytest
import torch

import rclib
from rclib.cli import main

INSIDE = [name for name, spec in rclib.METHODS.items() if spec.placement == "inside_llm"]
PER_SAMPLE = r"one whole number .* for a budget per sample"


def test_a_budget_per_sample_is_refused_alike_everywhere(deep_model, deep_encoded):
    per_sample = torch.tensor([3, 4, 5])
    with pytest.raises(ValueError, match=PER_SAMPLE):
        deep_model.compress(deep_encoded, "fastervlm", per_sample)
    for method in INSIDE:
        with pytest.raises(ValueError, match=PER_SAMPLE):
            deep_model.run(deep_encoded, method, per_sample, 2)


def test_full_ignores_a_budget_and_records_what_ran(deep_model, deep_encoded):
    run = deep_model.run(deep_encoded, "full", 5, 2)
    assert run.budget is None and run.result.n_output.tolist() == [deep_encoded.n_tokens] * 3


@pytest.mark.parametrize("method", INSIDE)
def test_tiny_budgets_give_valid_results_with_their_layer_counts(deep_model, deep_encoded, method):
    from rclib.viz import patch_colours

    for budget in (1, 3, 5):
        run = deep_model.run(deep_encoded, method, budget, 2)
        per_layer = run.tokens_per_layer
        assert per_layer.shape == (3, 4) and bool((per_layer[:, 0] == deep_encoded.n_tokens).all())
        assert bool((per_layer[:, -1] >= run.result.n_output).all()), "the last layer read at least what it kept"
        assert run.result.assignment.shape == (3, deep_encoded.n_tokens)
        patch_colours(run.result[0])  # the figures draw it


def test_answer_json_says_what_each_layer_read(tmp_path, tiny_llava_dir, tiny_clip_dir, tiny_images, capsys):
    from PIL import Image

    image = tmp_path / "image.png"
    Image.fromarray(tiny_images[0]).save(image)
    args = ["answer", "--image", str(image), "--question", "what colour is the circle ?", "--model",
            str(tiny_llava_dir), "--text-encoder", str(tiny_clip_dir), "--json"]
    for method, budget, expected in (("fastervlm", "9", [9, 9]), ("fastv", "9", [64, 9]), ("dart", "9", [64, 9])):
        assert main([*args, "--method", method, "--budget", budget]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["tokens_per_layer"] == expected  # the tiny LLM has 2 decoder layers
        assert record["equivalent_tokens"] == sum(expected) / 2
    assert main([*args, "--method", "full", "--budget", "9"]) == 2  # refused, said so: not run as if budgeted
    error = capsys.readouterr().err
    assert "full" in error and "budget" in error
